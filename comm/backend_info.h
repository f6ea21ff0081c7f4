// Which communication backends this build contains, for `tessera info` and error messages.
#pragma once

#include <string>

namespace tessera::comm {

// NCCL's version ("2.28.3"), or "not built" in a build without CUDA.
std::string ncclVersion();

}  // namespace tessera::comm
