#include "tests/data/data_test_support.h"

#include <stdexcept>

#include "data/detail/hdf5.h"

namespace tessera::data::testing {

void writeRawDataset(const std::string& path, const std::string& name,
                     const std::vector<std::uint64_t>& dims, RawType type,
                     const std::vector<std::uint64_t>& chunk) {
  using detail::checkHdf5;
  using detail::Handle;
  const detail::Hdf5Lock lock;
  detail::quietErrors();
  Handle file;
  if (std::filesystem::exists(path)) {
    file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  } else {
    file = Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  }
  checkHdf5(file.get(), "test file " + path, false);
  std::vector<hsize_t> hdims(dims.begin(), dims.end());
  Handle space(H5Screate_simple(static_cast<int>(hdims.size()), hdims.data(), nullptr), H5Sclose);
  checkHdf5(space.get(), "H5Screate_simple", false);
  hid_t file_type = H5T_STD_U8LE, mem_type = H5T_NATIVE_UINT8;
  std::size_t elem = 1;
  switch (type) {
    case RawType::kUint8:
      break;
    case RawType::kFloat32:
      file_type = H5T_IEEE_F32LE, mem_type = H5T_NATIVE_FLOAT, elem = 4;
      break;
    case RawType::kInt16:
      file_type = H5T_STD_I16LE, mem_type = H5T_NATIVE_INT16, elem = 2;
      break;
    case RawType::kInt32:
      file_type = H5T_STD_I32LE, mem_type = H5T_NATIVE_INT32, elem = 4;
      break;
  }
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!chunk.empty()) {
    std::vector<hsize_t> hchunk(chunk.begin(), chunk.end());
    checkHdf5(H5Pset_chunk(dcpl.get(), static_cast<int>(hchunk.size()), hchunk.data()),
              "H5Pset_chunk", false);
  }
  Handle ds(H5Dcreate2(file.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(),
                       H5P_DEFAULT),
            H5Dclose);
  checkHdf5(ds.get(), "H5Dcreate2 " + name, false);
  std::size_t count = 1;
  for (auto d : dims) count *= d;
  if (count > 0) {
    std::vector<std::uint8_t> values(count * elem, 0);
    if (type == RawType::kUint8) {
      const std::size_t per_row = count / dims[0];
      for (std::size_t k = 0; k < count; ++k) {
        values[k] =
            pixelOf(static_cast<std::int64_t>(k / per_row), static_cast<std::int64_t>(k % per_row));
      }
    }
    checkHdf5(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()),
              "H5Dwrite " + name, false);
  }
}

}  // namespace tessera::data::testing
