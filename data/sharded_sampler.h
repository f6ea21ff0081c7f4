// Which dataset indices each rank reads at each step (docs/design.md, contracts 2 and 3).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "data/data_position.h"

namespace tessera::data {

struct ShuffleOptions {
  // false: each epoch is a uniform permutation of all indices.
  // true: the epoch is a permutation of blocks of `block_size` consecutive indices (the last
  // block may be shorter), each kept in file order, so reads are long contiguous runs at the
  // price of batches made of neighbouring images.
  bool block = false;
  std::int64_t block_size = 256;
};

class ShardedSampler {
 public:
  // Throws InputError when dataset_size <= 0 or a block shuffle has block_size <= 0.
  // Copies are cheap and share the cache of drawn epoch orders.
  ShardedSampler(std::int64_t dataset_size, std::uint64_t seed, ShuffleOptions shuffle = {});

  // The epoch's global order: a pure function of (seed, epoch, shuffle options), drawn from
  // rngKey(seed, kDataOrder, epoch). Thread-safe; the last two epochs are kept.
  std::shared_ptr<const std::vector<std::int64_t>> epochOrder(std::int64_t epoch) const;

  // A step consumes world * batch consecutive positions of the epoch's order starting at
  // pos.consumed; rank r takes positions [consumed + r * batch, consumed + (r + 1) * batch).
  // Remainder policy: when fewer than world * batch samples remain in the epoch, the epoch ends
  // there (those samples are skipped this epoch; the next epoch is a new permutation), so every
  // rank gets `batch` samples at every step. A position at such an end is read as the start of
  // the next epoch. Resuming at any position on any world size continues with exactly the
  // samples of the epoch not yet consumed.
  // Throws InputError when one global batch is larger than the dataset or `pos` lies outside
  // the epoch; std::invalid_argument on a bad rank/world/batch.
  std::vector<std::int64_t> batchIndices(DataPosition pos, int rank, int world,
                                         std::int64_t batch) const;
  // The start of the step after the one at `pos`; already at (epoch + 1, 0) when the step was
  // the epoch's last.
  DataPosition advance(DataPosition pos, int world, std::int64_t batch) const;
  // `pos` with a spent epoch moved to (epoch + 1, 0): where the step at `pos` really starts.
  DataPosition normalize(DataPosition pos, int world, std::int64_t batch) const;
  // floor(dataset_size / (world * batch)).
  std::int64_t stepsPerEpoch(int world, std::int64_t batch) const;

  std::int64_t datasetSize() const { return size_; }
  std::uint64_t seed() const { return seed_; }
  const ShuffleOptions& shuffle() const { return shuffle_; }

 private:
  std::int64_t globalBatch(int world, std::int64_t batch) const;

  std::int64_t size_;
  std::uint64_t seed_;
  ShuffleOptions shuffle_;
  // Recently drawn epoch orders; shared by copies (the orders are pure functions of the above).
  struct EpochCache;
  std::shared_ptr<EpochCache> cache_;
};

}  // namespace tessera::data
