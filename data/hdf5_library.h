// Facts about the HDF5 library this build links.
#pragma once

#include <string>

namespace tessera::data {

// "1.10.8"
std::string hdf5Version();

// Whether the linked HDF5 was built thread-safe (H5is_library_threadsafe): it then serialises
// every API call itself and keeps error stacks per thread. Otherwise every HDF5 call in Tessera
// runs under one process-wide lock (data/detail/hdf5.h). Debian's libhdf5-103-1 (1.10.8,
// serial) is thread-safe.
bool hdf5ThreadSafe();

// Takes the process-wide HDF5 lock even when the library is thread-safe (tests exercise the lock
// this way on a thread-safe HDF5). Locks already held keep the mode they were taken in.
void setHdf5LockAlways(bool always);

}  // namespace tessera::data
