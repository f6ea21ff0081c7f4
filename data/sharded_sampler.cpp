#include "data/sharded_sampler.h"

#include <mutex>
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "core/keyed_rng.h"

namespace tessera::data {
namespace {

constexpr std::size_t kCachedEpochs = 2;

std::vector<std::int64_t> drawOrder(std::int64_t n, std::uint64_t seed, std::int64_t epoch,
                                    const ShuffleOptions& shuffle) {
  const auto e = static_cast<std::uint64_t>(epoch);
  if (!shuffle.block) return keyedPermutation(n, rngKey(seed, RngPurpose::kDataOrder, e));
  const std::int64_t bs = shuffle.block_size;
  const std::int64_t blocks = (n + bs - 1) / bs;
  const std::vector<std::int64_t> block_order =
      keyedPermutation(blocks, rngKey(seed, RngPurpose::kDataOrder, e, 1));
  std::vector<std::int64_t> order;
  order.reserve(static_cast<std::size_t>(n));
  for (const std::int64_t b : block_order) {
    const std::int64_t end = std::min(n, (b + 1) * bs);
    for (std::int64_t i = b * bs; i < end; ++i) order.push_back(i);
  }
  return order;
}

}  // namespace

struct ShardedSampler::EpochCache {
  std::mutex mutex;
  std::vector<std::pair<std::int64_t, std::shared_ptr<const std::vector<std::int64_t>>>> orders;
};

ShardedSampler::ShardedSampler(std::int64_t dataset_size, std::uint64_t seed,
                               ShuffleOptions shuffle)
    : size_(dataset_size), seed_(seed), shuffle_(shuffle), cache_(std::make_shared<EpochCache>()) {
  if (size_ <= 0) {
    throw InputError("cannot sample from a dataset of " + std::to_string(size_) + " images");
  }
  if (shuffle_.block && shuffle_.block_size <= 0) {
    throw InputError("shuffle block size must be positive, got " +
                     std::to_string(shuffle_.block_size));
  }
}

std::shared_ptr<const std::vector<std::int64_t>> ShardedSampler::epochOrder(
    std::int64_t epoch) const {
  if (epoch < 0) throw std::invalid_argument("negative epoch " + std::to_string(epoch));
  {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    for (const auto& [e, order] : cache_->orders) {
      if (e == epoch) return order;
    }
  }
  // Drawn outside the lock: two threads may draw the same epoch, with the same result.
  auto order =
      std::make_shared<const std::vector<std::int64_t>>(drawOrder(size_, seed_, epoch, shuffle_));
  std::lock_guard<std::mutex> lock(cache_->mutex);
  cache_->orders.emplace_back(epoch, order);
  if (cache_->orders.size() > kCachedEpochs) cache_->orders.erase(cache_->orders.begin());
  return order;
}

std::int64_t ShardedSampler::globalBatch(int world, std::int64_t batch) const {
  if (world <= 0) throw std::invalid_argument("world size must be positive");
  if (batch <= 0) throw std::invalid_argument("batch size must be positive");
  const std::int64_t global = static_cast<std::int64_t>(world) * batch;
  if (global > size_) {
    throw InputError("one global batch (" + std::to_string(world) + " ranks x " +
                     std::to_string(batch) + " images) is larger than the dataset (" +
                     std::to_string(size_) + " images)");
  }
  return global;
}

std::int64_t ShardedSampler::stepsPerEpoch(int world, std::int64_t batch) const {
  if (world <= 0 || batch <= 0) throw std::invalid_argument("world and batch must be positive");
  return size_ / (static_cast<std::int64_t>(world) * batch);
}

DataPosition ShardedSampler::normalize(DataPosition pos, int world, std::int64_t batch) const {
  const std::int64_t global = globalBatch(world, batch);
  if (pos.epoch < 0 || pos.consumed < 0 || pos.consumed > size_) {
    throw InputError("data position (epoch " + std::to_string(pos.epoch) + ", " +
                     std::to_string(pos.consumed) + " samples consumed) is outside a dataset of " +
                     std::to_string(size_) + " images");
  }
  if (size_ - pos.consumed < global) return DataPosition{pos.epoch + 1, 0};
  return pos;
}

std::vector<std::int64_t> ShardedSampler::batchIndices(DataPosition pos, int rank, int world,
                                                       std::int64_t batch) const {
  pos = normalize(pos, world, batch);
  if (rank < 0 || rank >= world) {
    throw std::invalid_argument("rank " + std::to_string(rank) + " outside world of " +
                                std::to_string(world));
  }
  const auto order = epochOrder(pos.epoch);
  const auto first = order->begin() + pos.consumed + rank * batch;
  return std::vector<std::int64_t>(first, first + batch);
}

DataPosition ShardedSampler::advance(DataPosition pos, int world, std::int64_t batch) const {
  pos = normalize(pos, world, batch);
  pos.consumed += static_cast<std::int64_t>(world) * batch;
  return normalize(pos, world, batch);
}

}  // namespace tessera::data
