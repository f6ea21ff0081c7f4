// Facts about the HDF5 library this build links.
#pragma once

#include <string>

namespace tessera::data {

// "1.10.8"
std::string hdf5Version();

}  // namespace tessera::data
