// The one way Tessera includes <hdf5.h> (only from .cpp files), plus checkHdf5 and RAII handles.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>

namespace tessera::data::detail {

// Throws (InputError when `user_input`, else Error) naming `what` and the HDF5 error stack's
// outermost and innermost messages when `status` < 0. Returns `status` otherwise.
long long checkHdf5(long long status, const std::string& what, bool user_input = true);

// Turns off HDF5's automatic printing of error stacks to stderr for the calling thread (HDF5
// keeps error stacks per thread); errors reach the user through checkHdf5's exceptions instead.
// Cheap after the first call on a thread: call it at the top of every entry point.
void quietErrors();

// "uint8", "int64", "float32", "string", ... for messages about a dataset's type.
std::string describeType(hid_t type);

// Owns one HDF5 identifier and closes it with the matching H5*close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// The file and memory dataspaces of rows [start, start + count) along dim 0 of `dataset`, for
// H5Dread/H5Dwrite. Errors (Error, not InputError) name `what`.
struct RowSelection {
  Handle file_space;
  Handle mem_space;
};
RowSelection selectRows(hid_t dataset, std::int64_t start, std::int64_t count,
                        const std::string& what);

}  // namespace tessera::data::detail
