// The sampler's contracts, with every rank's slice computed in one process: coverage at world
// sizes 1-4 under the remainder policy, determinism, fresh orders per epoch, exact resume on a
// different world size, and block shuffling.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "data/sharded_sampler.h"

namespace tessera::data {
namespace {

// Every index each rank sees in the steps of one epoch, starting at `pos`, in step order.
std::vector<std::int64_t> consumeEpoch(const ShardedSampler& s, DataPosition pos, int world,
                                       std::int64_t batch, std::int64_t* steps = nullptr) {
  std::vector<std::int64_t> seen;
  const std::int64_t epoch = s.normalize(pos, world, batch).epoch;
  std::int64_t n = 0;
  while (s.normalize(pos, world, batch).epoch == epoch) {
    for (int r = 0; r < world; ++r) {
      const auto idx = s.batchIndices(pos, r, world, batch);
      EXPECT_EQ(static_cast<std::int64_t>(idx.size()), batch);
      seen.insert(seen.end(), idx.begin(), idx.end());
    }
    pos = s.advance(pos, world, batch);
    ++n;
  }
  if (steps != nullptr) *steps = n;
  return seen;
}

TEST(ShardedSampler, CoversEveryIndexOnceAtWorldSizes1To4) {
  for (const std::int64_t n : {1, 7, 64, 100, 1001}) {
    for (int world = 1; world <= 4; ++world) {
      for (const std::int64_t batch : {1, 3, 8}) {
        if (world * batch > n) continue;
        const ShardedSampler s(n, 1234);
        std::int64_t steps = 0;
        const auto seen = consumeEpoch(s, {0, 0}, world, batch, &steps);
        const std::int64_t global = world * batch;
        EXPECT_EQ(steps, n / global);
        EXPECT_EQ(steps, s.stepsPerEpoch(world, batch));
        // Remainder policy: exactly n mod global samples are skipped, none repeated.
        EXPECT_EQ(static_cast<std::int64_t>(seen.size()), n - n % global);
        const std::set<std::int64_t> unique(seen.begin(), seen.end());
        EXPECT_EQ(unique.size(), seen.size()) << "n " << n << " world " << world;
        EXPECT_TRUE(
            std::all_of(seen.begin(), seen.end(), [&](std::int64_t i) { return i >= 0 && i < n; }));
        // The skipped samples are the tail of the epoch's order.
        const auto order = s.epochOrder(0);
        EXPECT_TRUE(std::equal(seen.begin(), seen.end(), order->begin()));
      }
    }
  }
}

TEST(ShardedSampler, RanksTakeConsecutiveSlicesOfTheGlobalBatch) {
  const ShardedSampler s(100, 7);
  const auto order = s.epochOrder(0);
  const DataPosition pos{0, 24};
  for (int r = 0; r < 3; ++r) {
    const auto idx = s.batchIndices(pos, r, 3, 5);
    EXPECT_TRUE(std::equal(idx.begin(), idx.end(), order->begin() + 24 + r * 5));
  }
  EXPECT_EQ(s.advance(pos, 3, 5), (DataPosition{0, 39}));
}

TEST(ShardedSampler, SameOrderAcrossRunsAndDifferentAcrossEpochsAndSeeds) {
  const ShardedSampler a(500, 42), b(500, 42), other_seed(500, 43);
  EXPECT_EQ(*a.epochOrder(0), *b.epochOrder(0));
  EXPECT_EQ(*a.epochOrder(3), *b.epochOrder(3));
  EXPECT_NE(*a.epochOrder(0), *a.epochOrder(1));
  EXPECT_NE(*a.epochOrder(1), *a.epochOrder(2));
  EXPECT_NE(*a.epochOrder(0), *other_seed.epochOrder(0));
  auto sorted = *a.epochOrder(1);
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 500; ++i) EXPECT_EQ(sorted[static_cast<std::size_t>(i)], i);
  // A copy shares nothing that changes results; an evicted epoch is redrawn identically.
  const ShardedSampler copy = a;
  const auto first = *a.epochOrder(0);
  for (int e = 1; e < 6; ++e) a.epochOrder(e);
  EXPECT_EQ(*copy.epochOrder(0), first);
}

TEST(ShardedSampler, EpochEndsWhenLessThanAGlobalBatchRemains) {
  const ShardedSampler s(10, 1);
  // 10 samples, global batch 4: steps at 0 and 4; the 2 left are skipped.
  EXPECT_EQ(s.advance({0, 0}, 2, 2), (DataPosition{0, 4}));
  EXPECT_EQ(s.advance({0, 4}, 2, 2), (DataPosition{1, 0}));
  // A stored position at the tail is read as the next epoch's start.
  EXPECT_EQ(s.normalize({0, 9}, 2, 2), (DataPosition{1, 0}));
  EXPECT_EQ(s.batchIndices({0, 9}, 0, 2, 2), s.batchIndices({1, 0}, 0, 2, 2));
  // On one rank with batch 1 the same position still has a sample left.
  EXPECT_EQ(s.normalize({0, 9}, 1, 1), (DataPosition{0, 9}));
  EXPECT_EQ(s.advance({0, 9}, 1, 1), (DataPosition{1, 0}));
}

TEST(ShardedSampler, ResumeOnThreeRanksAfterTwoSeesExactlyTheUnseenSamples) {
  const std::int64_t n = 1000;
  const ShardedSampler s(n, 99);
  for (const std::int64_t stop_after_steps : {0, 1, 13, 30}) {
    std::set<std::int64_t> seen;
    DataPosition pos{0, 0};
    for (std::int64_t k = 0; k < stop_after_steps; ++k) {
      for (int r = 0; r < 2; ++r) {
        for (auto i : s.batchIndices(pos, r, 2, 16)) EXPECT_TRUE(seen.insert(i).second);
      }
      pos = s.advance(pos, 2, 16);
    }
    EXPECT_EQ(pos, (DataPosition{0, stop_after_steps * 32}));
    // A new sampler (a restarted job) on 3 ranks with another batch size.
    const ShardedSampler resumed(n, 99);
    std::int64_t steps = 0;
    const auto rest = consumeEpoch(resumed, pos, 3, 10, &steps);
    const std::int64_t remaining = n - pos.consumed;
    EXPECT_EQ(steps, remaining / 30);
    EXPECT_EQ(static_cast<std::int64_t>(rest.size()), remaining - remaining % 30);
    for (auto i : rest) EXPECT_TRUE(seen.insert(i).second) << "index " << i << " seen twice";
    // Everything of the epoch but the remainder tail has now been seen exactly once.
    const auto order = s.epochOrder(0);
    const std::set<std::int64_t> tail(order->end() - remaining % 30, order->end());
    EXPECT_EQ(static_cast<std::int64_t>(seen.size() + tail.size()), n);
    for (auto i : tail) EXPECT_EQ(seen.count(i), 0u);
  }
}

TEST(ShardedSampler, BlockShuffleKeepsRunsContiguousAndCoversEverything) {
  const std::int64_t n = 1000, bs = 64;
  const ShardedSampler s(n, 5, ShuffleOptions{true, bs});
  const auto order = *s.epochOrder(0);
  ASSERT_EQ(static_cast<std::int64_t>(order.size()), n);
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(sorted[static_cast<std::size_t>(i)], i);
  // Blocks appear whole and in file order: within each, every index follows its predecessor.
  std::int64_t breaks = 0;
  for (std::size_t i = 1; i < order.size(); ++i) breaks += order[i] != order[i - 1] + 1;
  EXPECT_LE(breaks, (n + bs - 1) / bs - 1);
  EXPECT_NE(order, *s.epochOrder(1));
  EXPECT_EQ(order, *ShardedSampler(n, 5, ShuffleOptions{true, bs}).epochOrder(0));
  // A rank's slice no longer than a block spans at most two blocks: at most two runs to read
  // (the short last block shifts later blocks off the batch boundaries).
  for (DataPosition pos{0, 0}; pos.epoch == 0; pos = s.advance(pos, 2, 32)) {
    for (int r = 0; r < 2; ++r) {
      const auto idx = s.batchIndices(pos, r, 2, 32);
      int runs = 1;
      for (std::size_t i = 1; i < idx.size(); ++i) runs += idx[i] != idx[i - 1] + 1;
      EXPECT_LE(runs, 2) << "consumed " << pos.consumed << " rank " << r;
    }
  }
}

TEST(ShardedSampler, RejectsImpossibleRequests) {
  EXPECT_THROW(ShardedSampler(0, 1), InputError);
  EXPECT_THROW(ShardedSampler(10, 1, ShuffleOptions{true, 0}), InputError);
  const ShardedSampler s(10, 1);
  try {
    s.batchIndices({0, 0}, 0, 4, 3);
    ADD_FAILURE() << "a global batch larger than the dataset was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("larger than the dataset (10 images)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(s.batchIndices({0, 11}, 0, 1, 1), InputError);
  EXPECT_THROW(s.batchIndices({-1, 0}, 0, 1, 1), InputError);
  EXPECT_THROW(s.batchIndices({0, 0}, 2, 2, 1), std::invalid_argument);
  EXPECT_THROW(s.batchIndices({0, 0}, 0, 0, 1), std::invalid_argument);
  EXPECT_EQ(s.stepsPerEpoch(4, 3), 0);
}

}  // namespace
}  // namespace tessera::data
