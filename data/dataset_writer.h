// Writes a Tessera dataset file (README "Dataset format") atomically and deterministically: the
// same images give the same bytes (no timestamps), everything goes to a temporary file beside
// the target, and only commit() renames it into place.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/image_shape.h"

namespace tessera::data {

struct WriteOptions {
  std::int64_t chunk = 0;  // images per HDF5 chunk along N; 0: about 1 MiB of images per chunk
  int compression = 0;     // gzip (deflate) level 0-9; 0: none
  bool force = false;      // replace an existing file at the target path
};

class DatasetWriter {
 public:
  // Creates `path`'s temporary sibling with `count` images of `shape` (dataset "images",
  // N x H x W x C uint8, chunked along N) and, when `labels`, an int64 dataset "labels".
  // Throws InputError when `path` exists and !options.force, or options are out of range;
  // Error when the file cannot be created.
  DatasetWriter(std::string path, std::int64_t count, ImageShape shape, bool labels,
                WriteOptions options = {});
  // Without commit(), removes the temporary file: a failed conversion leaves nothing behind.
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // Appends `n` images (HWC, n * shape.bytes() bytes) and, when the file has labels, `n` labels
  // (`labels` is ignored otherwise). Throws Error when more than `count` images are appended.
  void append(const std::uint8_t* images, const std::int64_t* labels, std::int64_t n);
  // Sets an attribute of the "images" dataset (a float64 vector; a string). Throws Error when
  // HDF5 refuses it. `tessera encode` records the latent range and the autoencoder this way.
  void setAttribute(const std::string& name, const std::vector<double>& values);
  void setAttribute(const std::string& name, const std::string& value);
  std::int64_t written() const;
  std::int64_t chunkImages() const;

  // Requires written() == count. Flushes, fsyncs and renames the file into place.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::data
