// Removing a directory tree without std::filesystem::remove_all.
//
// PyTorch's pip LibTorch (2.5 and later, at least through 2.11) exports copies of libstdc++'s
// std::filesystem that it linked statically (pytorch/pytorch#133437), and the dynamic linker
// binds a program's std::filesystem calls to them. Most work; its remove_all jumps to address 0
// (tests/gpu/crash_probe.sh: the stack at the fault, and LD_DEBUG bindings of the CUDA build).
// Putting libstdc++ first among the program's libraries did not change the bindings there, so
// Tessera does not call remove_all at all.
#pragma once

#include <string>
#include <system_error>

namespace tessera {

// Removes `path` and, if it is a directory, everything below it (symlinks are removed, never
// followed). A missing path is not an error. Returns false and sets `ec` on the first failure.
bool removeTree(const std::string& path, std::error_code& ec);

// The same, throwing std::system_error naming the path.
void removeTree(const std::string& path);

}  // namespace tessera
