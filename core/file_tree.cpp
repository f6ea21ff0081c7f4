#include "core/file_tree.h"

#include <ftw.h>

#include <cerrno>
#include <cstdio>

namespace tessera {
namespace {

thread_local int removal_errno = 0;

int removeEntry(const char* path, const struct stat*, int, struct FTW*) {
  if (std::remove(path) != 0 && errno != ENOENT) {
    removal_errno = errno;
    return 1;  // stop the walk
  }
  return 0;
}

}  // namespace

bool removeTree(const std::string& path, std::error_code& ec) {
  ec.clear();
  removal_errno = 0;
  // Depth first (contents before their directory), physical (symlinks are not followed).
  const int rc = ::nftw(path.c_str(), removeEntry, 16, FTW_DEPTH | FTW_PHYS);
  if (rc == 0) return true;
  const int err = removal_errno != 0 ? removal_errno : errno;
  if (err == ENOENT) return true;
  ec = std::error_code(err, std::generic_category());
  return false;
}

void removeTree(const std::string& path) {
  std::error_code ec;
  if (!removeTree(path, ec)) throw std::system_error(ec, "removing '" + path + "'");
}

}  // namespace tessera
