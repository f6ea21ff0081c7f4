// A read-only Tessera dataset file (README "Dataset format"): an HDF5 dataset of images
// N x H x W x C uint8 (N x H x W is read as C = 1) and an optional sibling dataset `labels` of N
// integers (int64 on disk when Tessera writes it; any integer type is read as int64).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/image_shape.h"

namespace tessera::data {

class ImageFile {
 public:
  // Opens `path` read-only without HDF5 file locking (parallel file systems often refuse locks)
  // and checks it before any read. Throws InputError naming the file, the dataset and expected
  // vs found for: missing file, not HDF5, truncated file, missing dataset, wrong dtype, wrong
  // rank, zero images, a shape unlike `expected` (its zero fields are not checked), and a
  // `labels` dataset that is not N integers.
  static ImageFile open(const std::string& path, const std::string& dataset = "images",
                        const ImageShape* expected = nullptr);

  ImageFile(ImageFile&&) noexcept;
  ImageFile& operator=(ImageFile&&) noexcept;
  ~ImageFile();

  std::int64_t size() const;
  ImageShape shape() const;
  bool hasLabels() const;
  const std::string& path() const;
  const std::string& dataset() const;
  // Images per HDF5 chunk along N (0 when the dataset is contiguous) and whether chunks are
  // filtered (compressed); the loader uses them to choose its read pattern.
  std::int64_t chunkImages() const;
  bool compressed() const;

  // Whether readRange() reads by file offset (pread), in parallel from any number of threads:
  // true for images stored unfiltered, contiguously or in chunks of whole images (what
  // `tessera convert` writes without --compression), with HDF5 >= 1.10.5. Otherwise reads go
  // through HDF5 as hyperslabs, one thread at a time.
  bool directReads() const;

  // Images [start, start + count) into `out` (count * H * W * C bytes, HWC). Safe to call from
  // several threads. Throws Error naming the file on an out-of-range request or a failed read.
  void readRange(std::int64_t start, std::int64_t count, std::uint8_t* out) const;
  // An attribute of the images dataset as float64 values, or as a string; empty when the
  // dataset has no attribute of that name (Error naming the file when it is of another type).
  std::vector<double> doubleAttribute(const std::string& name) const;
  std::string stringAttribute(const std::string& name) const;

  // Labels [start, start + count) into `out`. Requires hasLabels().
  void readLabels(std::int64_t start, std::int64_t count, std::int64_t* out) const;

 private:
  struct Impl;
  explicit ImageFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::data
