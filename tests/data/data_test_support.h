// Helpers for the data tests: scratch directories and hand-made HDF5 files (good and bad).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/file_tree.h"
#include "data/dataset_writer.h"
#include "data/image_shape.h"

namespace tessera::data::testing {

// A fresh directory under the system temp dir, removed when the test ends.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("tessera_data_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    removeTree(path_.string());
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    removeTree(path_.string(), ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The value of pixel `p` of image `i` in the files makeImages() writes.
inline std::uint8_t pixelOf(std::int64_t i, std::int64_t p) {
  return static_cast<std::uint8_t>((i * 31 + p * 7 + (i * p) % 13) & 0xff);
}

inline std::vector<std::uint8_t> makeImages(std::int64_t n, const ImageShape& shape) {
  std::vector<std::uint8_t> images(static_cast<std::size_t>(n * shape.bytes()));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t p = 0; p < shape.bytes(); ++p) {
      images[static_cast<std::size_t>(i * shape.bytes() + p)] = pixelOf(i, p);
    }
  }
  return images;
}

// A valid dataset of n images of `shape` with pixelOf() values and labels 1000 + i.
inline void writeDataset(const std::string& path, std::int64_t n, const ImageShape& shape,
                         WriteOptions options = {}, bool labels = true) {
  const auto images = makeImages(n, shape);
  std::vector<std::int64_t> label_values(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) label_values[static_cast<std::size_t>(i)] = 1000 + i;
  DatasetWriter writer(path, n, shape, labels, options);
  writer.append(images.data(), label_values.data(), n);
  writer.commit();
}

enum class RawType { kUint8, kFloat32, kInt16, kInt32 };

// An HDF5 file holding one dataset `name` of `dims` and `type` (an existing file gets the
// dataset added), contiguous or in chunks of `chunk`. uint8 datasets hold pixelOf() values (row
// i of dims[0] is image i of makeImages()); the other types hold zeros.
void writeRawDataset(const std::string& path, const std::string& name,
                     const std::vector<std::uint64_t>& dims, RawType type,
                     const std::vector<std::uint64_t>& chunk = {});

}  // namespace tessera::data::testing
