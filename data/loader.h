// Background loading of training batches: worker threads read a rank's share of each step,
// convert it to float, augment it and hand ready batches to the training thread through a
// bounded, ordered queue.
#pragma once

#include <cstdint>
#include <memory>

#include "data/batch.h"
#include "data/data_position.h"
#include "data/image_file.h"
#include "data/loader_options.h"
#include "data/sharded_sampler.h"

namespace tessera::data {

class Loader {
 public:
  // Opens and checks the file (ImageFile::open errors), checks the options (InputError), reads
  // the labels and, when cached, every image, then starts the workers at `start`.
  Loader(LoaderOptions options, DataPosition start);
  // Stops and joins the workers at any moment, mid-epoch included; waits at most for the
  // batches being built.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next step's batch; blocks until it is ready. Batches come in step order whatever the
  // number of workers, and their contents are independent of thread timing. A worker's
  // exception is rethrown here (same type and message) when its step is reached, and again on
  // every later call.
  Batch next();

  // Cumulative seconds next() spent blocked waiting for a batch.
  double waitSeconds() const;
  std::int64_t stepsPerEpoch() const;
  std::int64_t datasetSize() const;
  ImageShape shape() const;
  bool hasLabels() const;
  // Whether uncached batches are read by file offset, in parallel (ImageFile::directReads).
  bool directReads() const;
  bool cached() const;  // images are served from memory
  const ShardedSampler& sampler() const;
  const LoaderOptions& options() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tessera::data
