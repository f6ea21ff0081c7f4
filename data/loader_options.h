// What the loader reads and how; plain values from the trainer's config.
#pragma once

#include <cstdint>
#include <string>

#include "data/image_shape.h"
#include "data/sharded_sampler.h"

namespace tessera::data {

struct LoaderOptions {
  std::string path;
  std::string dataset = "images";
  ImageShape expected;           // checked on open; zero fields are not checked
  std::int64_t batch_size = 32;  // per rank
  int rank = 0;
  int world = 1;
  std::uint64_t seed = 0;
  ShuffleOptions shuffle;
  int prefetch = 4;    // batches ready or being built ahead of the consumer (>= 1)
  int workers = 1;     // threads that read and convert whole batches (>= 1)
  bool hflip = false;  // random horizontal flip keyed by (seed, epoch, dataset index)
  // kMemory: read every image into memory once, on construction; kNone: read each batch from
  // the file; kAuto: kMemory when the images take at most cache_max_bytes.
  enum class Cache { kAuto, kMemory, kNone } cache = Cache::kAuto;
  double cache_max_bytes = 4e9;
  bool pin_memory = false;  // page-locked batches (CUDA builds only; ignored otherwise)
  // kFloat: batches of CHW float images in [-1, 1]; kUint8: the stored NHWC bytes (flipped the
  // same way), converted by modelInput() on the training device: a quarter of the bytes to
  // build and to copy to a GPU, and bitwise the same values once converted.
  enum class Output { kFloat, kUint8 } output = Output::kFloat;
};

}  // namespace tessera::data
