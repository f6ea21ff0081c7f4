// models/distribution_metrics.h on synthetic features: the Fréchet distance of a set with itself
// is 0 and grows with a mean shift and with added noise; sums added in shards equal one pass;
// precision falls with noise, recall falls when the generated set is one mode; the score and the
// entropy at their known values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/distribution_metrics.h"

namespace tessera::models {
namespace {

at::Tensor clusters(std::int64_t n, std::int64_t modes, std::uint64_t seed) {
  torch::manual_seed(seed);
  const at::Tensor centres = torch::randn({modes, 16}, torch::kDouble) * 4;
  const at::Tensor which = torch::arange(n) % modes;
  return centres.index_select(0, which) + torch::randn({n, 16}, torch::kDouble);
}

Gaussian fit(const at::Tensor& x, std::int64_t shards = 1) {
  FeatureSums sums(x.size(1));
  for (const auto& part : x.chunk(shards, 0)) sums.add(part);
  LocalStatsReducer local;
  sums.reduce(local);
  return sums.gaussian();
}

TEST(FrechetDistance, ZeroForASetWithItself) {
  const at::Tensor x = clusters(2000, 10, 1);
  EXPECT_NEAR(frechetDistance(fit(x), fit(x)), 0.0, 1e-8);
}

TEST(FrechetDistance, GrowsWithNoiseAndShift) {
  const at::Tensor x = clusters(2000, 10, 1);
  const at::Tensor y = clusters(2000, 10, 1) * 1.0;
  torch::manual_seed(7);
  const at::Tensor noise = torch::randn_like(x);
  double last = frechetDistance(fit(x), fit(y));
  for (double s : {0.25, 0.5, 1.0, 2.0}) {
    const double fd = frechetDistance(fit(x), fit(y + s * noise));
    EXPECT_GT(fd, last) << "noise " << s;
    last = fd;
  }
  const double shifted = frechetDistance(fit(x), fit(x + 0.5));
  EXPECT_NEAR(shifted, 16 * 0.25, 1e-8);  // ||mu1 - mu2||^2 alone
}

TEST(FrechetDistance, ShardedSumsEqualOnePass) {
  const at::Tensor x = clusters(1000, 5, 3);
  const at::Tensor y = clusters(1000, 7, 4);
  const double one = frechetDistance(fit(x), fit(y));
  for (std::int64_t shards : {2, 3}) {
    EXPECT_NEAR(frechetDistance(fit(x, shards), fit(y, shards)), one, 1e-9 * one);
  }
}

TEST(PrecisionRecall, PrecisionFallsWithNoiseRecallWithOneMode) {
  const at::Tensor real = clusters(1000, 10, 1);
  const at::Tensor fake = clusters(1000, 10, 2) * 1.0;
  LocalStatsReducer local;
  const PrecisionRecall same = precisionRecall(real, clusters(1000, 10, 1), local);
  EXPECT_GT(same.precision, 0.7);
  EXPECT_GT(same.recall, 0.7);
  torch::manual_seed(5);
  const PrecisionRecall noisy = precisionRecall(real, real + 2 * torch::randn_like(real), local);
  EXPECT_LT(noisy.precision, same.precision - 0.3);
  // One mode: its samples lie on the real manifold, but it covers a tenth of the real set.
  const at::Tensor one_mode = real.index_select(0, torch::arange(0, 1000, 10));
  const PrecisionRecall collapsed =
      precisionRecall(real, one_mode + 0.01 * torch::randn_like(one_mode), local);
  EXPECT_GT(collapsed.precision, 0.9);
  EXPECT_LT(collapsed.recall, 0.3);
}

TEST(InceptionScore, BoundsAndEntropy) {
  const std::int64_t classes = 10;
  FeatureSums confident(2, classes);
  const at::Tensor labels = torch::arange(100) % classes;
  confident.add(torch::randn({100, 2}), torch::one_hot(labels, classes).to(torch::kDouble));
  EXPECT_NEAR(confident.inceptionScore(), 10.0, 1e-9);
  FeatureSums constant(2, classes);
  constant.add(torch::randn({100, 2}), torch::full({100, classes}, 0.1, torch::kDouble));
  EXPECT_NEAR(constant.inceptionScore(), 1.0, 1e-9);
  EXPECT_NEAR(entropyBits(torch::ones({8})), 3.0, 1e-12);
  EXPECT_NEAR(entropyBits(torch::tensor({5.0, 0.0, 0.0})), 0.0, 1e-12);
}

}  // namespace
}  // namespace tessera::models
