#include "data/hdf5_library.h"

#include <string>
#include <vector>

#include "core/error.h"
#include "data/detail/hdf5.h"

namespace tessera::data {
namespace detail {
namespace {

struct StackEnds {
  std::string outer;
  std::string inner;
};

// Walked downward: the first entry is the API call, the last the place the error arose.
herr_t collectEnds(unsigned n, const H5E_error2_t* err, void* out) {
  auto* ends = static_cast<StackEnds*>(out);
  if (err->desc == nullptr || err->desc[0] == '\0') return 0;
  if (n == 0) ends->outer = err->desc;
  ends->inner = err->desc;
  return 0;
}

}  // namespace

long long checkHdf5(long long status, const std::string& what, bool user_input) {
  if (status >= 0) return status;
  StackEnds ends;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collectEnds, &ends);
  H5Eclear2(H5E_DEFAULT);
  std::string reason = ends.outer;
  if (ends.inner != ends.outer) reason += (reason.empty() ? "" : ": ") + ends.inner;
  const std::string msg = what + (reason.empty() ? "" : ": " + reason);
  if (user_input) throw InputError(msg);
  throw Error(msg);
}

void quietErrors() {
  thread_local bool quiet = false;
  if (!quiet) {
    const Hdf5Lock lock;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    quiet = true;
  }
}

std::string describeType(hid_t type) {
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: {
      const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
      return std::string(is_signed ? "int" : "uint") + std::to_string(8 * H5Tget_size(type));
    }
    case H5T_FLOAT:
      return "float" + std::to_string(8 * H5Tget_size(type));
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_REFERENCE:
      return "reference";
    case H5T_VLEN:
      return "variable-length";
    default:
      return "unknown type";
  }
}

RowSelection selectRows(hid_t dataset, std::int64_t start, std::int64_t count,
                        const std::string& what) {
  RowSelection sel{Handle(H5Dget_space(dataset), H5Sclose), Handle()};
  checkHdf5(sel.file_space.get(), what, false);
  const int rank = H5Sget_simple_extent_ndims(sel.file_space.get());
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(sel.file_space.get(), dims.data(), nullptr);
  std::vector<hsize_t> offset(dims.size(), 0);
  offset[0] = static_cast<hsize_t>(start);
  dims[0] = static_cast<hsize_t>(count);
  checkHdf5(H5Sselect_hyperslab(sel.file_space.get(), H5S_SELECT_SET, offset.data(), nullptr,
                                dims.data(), nullptr),
            what, false);
  sel.mem_space = Handle(H5Screate_simple(rank, dims.data(), nullptr), H5Sclose);
  checkHdf5(sel.mem_space.get(), what, false);
  return sel;
}

}  // namespace detail

bool hdf5ThreadSafe() {
  return detail::hdf5ThreadSafe();
}

void setHdf5LockAlways(bool always) {
  detail::hdf5LockAlways().store(always, std::memory_order_release);
}

std::string hdf5Version() {
  const detail::Hdf5Lock lock;
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

}  // namespace tessera::data
