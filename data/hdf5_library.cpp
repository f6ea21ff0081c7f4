#include "data/hdf5_library.h"

#include <mutex>

#include "core/error.h"
#include "data/detail/hdf5.h"

namespace tessera::data {
namespace detail {
namespace {

herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0 && err->desc != nullptr) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

}  // namespace

long long checkHdf5(long long status, const std::string& what, bool user_input) {
  if (status >= 0) return status;
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &reason);
  H5Eclear2(H5E_DEFAULT);
  const std::string msg = what + (reason.empty() ? "" : ": " + reason);
  if (user_input) throw InputError(msg);
  throw Error(msg);
}

}  // namespace detail

std::string hdf5Version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

}  // namespace tessera::data
