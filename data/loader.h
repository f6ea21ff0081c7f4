// Background loading of training batches: worker threads read a rank's share of each step,
// convert it to float, augment it and hand ready batches to the training thread through a
// bounded, ordered queue. A training thread that finds its batch not ready builds batches of the
// queue itself rather than wait idle.
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

  // The next step's batch; blocks until it is ready. While it is not, builds the first step
  // of the `prefetch` window that no worker has taken yet, if any. Batches come in step order
  // whatever the number of workers, and their contents are independent of thread timing and of
  // which thread built them. An exception building a step is rethrown here (same type and
  // message) when that step is reached, and again on every later call.
  Batch next();

  // Cumulative seconds next() spent on batches that were not ready when it was called (waiting
  // for a worker, or building steps itself).
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
