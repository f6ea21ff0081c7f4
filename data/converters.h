// `tessera convert`: public datasets and image folders to Tessera's dataset format (README
// "Dataset format"). Every converter is deterministic (same input, same bytes), refuses to
// replace an existing file unless WriteOptions::force, and writes through DatasetWriter, so a
// failed conversion leaves no partial file behind. Errors about the input are InputError naming
// the offending file.
#pragma once

#include <cstdint>
#include <string>

#include "data/dataset_writer.h"
#include "data/image_shape.h"

namespace tessera::data {

struct ConvertResult {
  std::string path;
  std::int64_t images = 0;
  ImageShape shape;
  std::int64_t classes = 0;  // distinct labels (0 when the file has no labels)
};

// An IDX image file (N x H x W) and optionally an IDX label file (N), .gz or plain.
ConvertResult convertIdx(const std::string& images, const std::string& labels,
                         const std::string& out, const WriteOptions& options);

// Where Debian's dataset-fashion-mnist package installs the files.
std::string defaultFashionMnistDir();

// Fashion-MNIST (or MNIST) from `dir`/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz];
// split is "train" (60,000 images) or "test" (10,000).
ConvertResult convertFashionMnist(const std::string& dir, const std::string& split,
                                  const std::string& out, const WriteOptions& options);

// CIFAR-10's binary version: `dir` (or `dir`/cifar-10-batches-bin) holding data_batch_1..5.bin
// (split "train") or test_batch.bin ("test"); records of 1 label byte + 3072 bytes CHW, written
// as N x 32 x 32 x 3.
ConvertResult convertCifar10(const std::string& dir, const std::string& split,
                             const std::string& out, const WriteOptions& options);

struct ImageFolderOptions {
  // Output height and width: each image's centred square crop resized to size x size.
  // 0: keep the images' size (all must be equal).
  int size = 0;
  // Label = index of the image's first-level sub-folder among the sorted sub-folder names.
  bool labels_from_dirs = false;
};

// Every PNG/JPEG/BMP/TGA/GIF/PNM image below `folder` (recursively, sorted by relative path).
// Grayscale when every image is grayscale, RGB otherwise (alpha is dropped). Logs progress.
ConvertResult convertImageFolder(const std::string& folder, const std::string& out,
                                 const ImageFolderOptions& folder_options,
                                 const WriteOptions& options);

}  // namespace tessera::data
