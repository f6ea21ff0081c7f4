// Measurements behind `tessera bench data` (issue 4's target: loader throughput vs a raw
// sequential H5Dread of the same bytes).
#pragma once

#include <cstdint>
#include <utility>

#include "core/json.h"
#include "data/loader_options.h"

namespace tessera::data {

// The loader against the ceiling for any reader of its file. Times `batches` calls of next()
// on a Loader built from `options` that do nothing with the batch, and a read of the same number
// of images with plain H5Dread calls of `raw_batch_images` images into one reused buffer, front
// to back (starting over at the end of the file, like the loader's epochs), with HDF5's default
// settings. The two are timed in `rounds` alternating segments, loader then raw, so that both
// see the same machine: on a shared machine the load changes from one second to the next, and
// two measurements taken one after the other compared the load as much as the readers. Each
// round builds its loader afresh (untimed: checks, labels, memory cache, one batch) where the
// last one stopped, and closes it before the raw read opens the file. Returns the loader's JSON
// object (fields: bench, path, dataset_images, shape, batch, world, workers, prefetch, shuffle,
// hflip, cached, reads, open_seconds (the first round's), rounds, batches, images, seconds,
// images_per_s, mb_per_s (stored uint8 bytes), wait_seconds) and the raw read's (bench, path,
// rounds, images, batch_images, seconds, images_per_s, mb_per_s), each over the sum of its
// segments.
std::pair<JsonObject, JsonObject> benchmarkLoaderAndRawRead(const LoaderOptions& options,
                                                            std::int64_t batches, int rounds = 5,
                                                            std::int64_t raw_batch_images = 256);

}  // namespace tessera::data
