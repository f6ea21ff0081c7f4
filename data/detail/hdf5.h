// The one way Tessera includes <hdf5.h> (only from .cpp files), plus the process-wide HDF5 lock,
// checkHdf5 and RAII handles. Header-only, so that every library calling HDF5 (tessera_data,
// tessera_checkpoint) shares the one lock without linking another.
#pragma once

#include <hdf5.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>

namespace tessera::data::detail {

// Whether the linked HDF5 serialises its API calls itself (built with --enable-threadsafe).
inline bool hdf5ThreadSafe() {
  static const bool safe = [] {
    hbool_t is_safe = 0;
    return H5is_library_threadsafe(&is_safe) >= 0 && is_safe;
  }();
  return safe;
}

inline std::atomic<bool>& hdf5LockAlways() {
  static std::atomic<bool> always{false};
  return always;
}

inline std::recursive_mutex& hdf5Mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

// The process-wide HDF5 lock. Every HDF5 call in Tessera (the dataset reader and writer, loader
// workers, the checkpoint writer thread, benchmarks) runs while one of these is alive on its
// thread. An HDF5 built without thread safety must never be entered by two threads at once,
// whatever file or object each works on (identifiers, free lists, metadata caches and the error
// stack are global), so a lock per file is not enough. Take it at the top of each entry point,
// before its first HDF5 call, and keep it until the last (error stack walk included: such an
// HDF5 keeps one error stack for the process). It is recursive, so an entry point may call
// another. With a thread-safe HDF5 it is not taken (the library locks itself), unless forced by
// data::setHdf5LockAlways().
class Hdf5Lock {
 public:
  Hdf5Lock() : locked_(!hdf5ThreadSafe() || hdf5LockAlways().load(std::memory_order_acquire)) {
    if (locked_) hdf5Mutex().lock();
  }
  ~Hdf5Lock() {
    if (locked_) hdf5Mutex().unlock();
  }
  Hdf5Lock(const Hdf5Lock&) = delete;
  Hdf5Lock& operator=(const Hdf5Lock&) = delete;

 private:
  const bool locked_;
};

// Throws (InputError when `user_input`, else Error) naming `what` and the HDF5 error stack's
// outermost and innermost messages when `status` < 0. Returns `status` otherwise.
long long checkHdf5(long long status, const std::string& what, bool user_input = true);

// Turns off HDF5's automatic printing of error stacks to stderr for the calling thread (a
// thread-safe HDF5 keeps error stacks per thread, another one a single one for the process);
// errors reach the user through checkHdf5's exceptions instead. Cheap after the first call on a
// thread: call it at the top of every entry point, under its Hdf5Lock.
void quietErrors();

// "uint8", "int64", "float32", "string", ... for messages about a dataset's type.
std::string describeType(hid_t type);

// Owns one HDF5 identifier and closes it with the matching H5*close, under the Hdf5Lock (a
// handle may die outside its entry point's lock, e.g. while an exception unwinds).
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
    if (id_ >= 0 && closer_ != nullptr) {
      const Hdf5Lock lock;
      closer_(id_);
    }
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
