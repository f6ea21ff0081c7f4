// Measurements behind `tessera bench data` (issue 4's target: loader throughput vs a raw
// sequential H5Dread of the same bytes). Each returns one JSON object for one bench line.
#pragma once

#include <cstdint>
#include <string>

#include "core/json.h"
#include "data/image_shape.h"
#include "data/loader_options.h"

namespace tessera::data {

// Builds a Loader from `options` (timed as open_seconds: checks, labels, memory cache), takes
// one untimed batch, then times `batches` calls of next() that do nothing with the batch.
// Fields: bench, path, dataset_images, shape, batch, world, workers, prefetch, shuffle, cached,
// open_seconds, batches, images, seconds, images_per_s, mb_per_s (stored uint8 bytes),
// wait_seconds.
JsonObject benchmarkLoader(const LoaderOptions& options, std::int64_t batches);

// Reads `images` images of `dataset` (0: one pass) front to back, starting over at the end of
// the file, with plain H5Dread calls of `batch_images` images into one reused buffer: the
// ceiling for any reader of the file. Fields: bench, path, images, batch_images, seconds,
// images_per_s, mb_per_s.
JsonObject benchmarkRawRead(const std::string& path, const std::string& dataset = "images",
                            std::int64_t batch_images = 256, std::int64_t images = 0);

}  // namespace tessera::data
