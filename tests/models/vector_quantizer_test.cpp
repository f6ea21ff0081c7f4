#include "models/vector_quantizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace tessera::models {
namespace {

VectorQuantizerOptions small(std::int64_t k = 8, std::int64_t d = 4) {
  VectorQuantizerOptions o;
  o.codebook_size = k;
  o.code_dim = d;
  o.init = CodebookInit::kRandom;
  o.restart_threshold = 0;
  o.seed = 3;
  return o;
}

TEST(VectorQuantizer, NearestCodeEqualsBruteForce) {
  torch::manual_seed(0);
  VectorQuantizer vq(small(16, 5));
  vq->eval();
  const at::Tensor z = torch::randn({3, 5, 4, 2});
  const QuantizerOutput out = vq->forward(z);
  const at::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, 5});
  const at::Tensor codes = out.codes.reshape(-1);
  for (std::int64_t i = 0; i < flat.size(0); ++i) {
    std::int64_t best = -1;
    double best_d = 1e30;
    for (std::int64_t j = 0; j < 16; ++j) {
      const double dist = (flat[i] - vq->codebook()[j]).pow(2).sum().item<double>();
      if (dist < best_d) {
        best_d = dist;
        best = j;
      }
    }
    EXPECT_EQ(codes[i].item<std::int64_t>(), best) << "vector " << i;
  }
  // The quantized output is the chosen code.
  const at::Tensor q = out.quantized.permute({0, 2, 3, 1}).reshape({-1, 5});
  EXPECT_TRUE(torch::allclose(q, vq->codebook().index_select(0, codes)));
}

TEST(VectorQuantizer, GradientsPassStraightThrough) {
  VectorQuantizer vq(small());
  const at::Tensor z = torch::randn({2, 4, 3, 3}, torch::requires_grad());
  const at::Tensor g = torch::randn({2, 4, 3, 3});
  (vq->forward(z).quantized * g).sum().backward();
  EXPECT_TRUE(torch::equal(z.grad(), g));
}

TEST(VectorQuantizer, CommitmentPullsEncoderTowardsCode) {
  auto o = small();
  o.beta = 0.25;
  VectorQuantizer vq(o);
  const at::Tensor z = torch::randn({1, 4, 2, 2}, torch::requires_grad());
  const QuantizerOutput out = vq->forward(z);
  out.commitment.backward();
  const at::Tensor q = out.quantized.detach();
  // d/dz beta * mean((z - q)^2) = 2 beta (z - q) / numel; the codebook gets no gradient (EMA).
  EXPECT_TRUE(torch::allclose(z.grad(), 2 * 0.25 * (z.detach() - q) / z.numel(), 1e-5, 1e-7));
  EXPECT_NEAR(out.commitment.item<double>(), 0.25 * (z.detach() - q).pow(2).mean().item<double>(),
              1e-6);
}

TEST(VectorQuantizer, EmaUpdateEqualsHandComputation) {
  auto o = small(3, 2);
  o.decay = 0.9;
  o.eps = 1e-5;
  VectorQuantizer vq(o);
  torch::NoGradGuard no_grad;
  vq->codebook().copy_(torch::tensor({{0.0f, 0.0f}, {10.0f, 0.0f}, {0.0f, 10.0f}}));
  vq->clusterSize().fill_(2.0f);
  vq->embedSum().copy_(vq->codebook() * 2);
  // Four vectors: three near code 0, one near code 1, none near code 2.
  const at::Tensor flat = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {1.0f, 1.0f}, {9.0f, 1.0f}});
  vq->train();
  vq->forward(flat.reshape({1, 2, 2, 2}).permute({0, 3, 1, 2}).contiguous());
  LocalStatsReducer local;
  vq->update(local, 0);

  const double d = 0.9;
  const std::vector<double> counts{3, 1, 0};
  const std::vector<std::vector<double>> sums{{2, 2}, {9, 1}, {0, 0}};
  const std::vector<std::vector<double>> old_codes{{0, 0}, {10, 0}, {0, 10}};
  std::vector<double> n(3);
  double total = 0;
  for (int i = 0; i < 3; ++i) {
    n[i] = d * 2 + (1 - d) * counts[i];
    total += n[i];
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(vq->clusterSize()[i].item<double>(), n[i], 1e-5);
    const double smoothed = (n[i] + 1e-5) / (total + 3 * 1e-5) * total;
    for (int j = 0; j < 2; ++j) {
      const double m = d * 2 * old_codes[i][j] + (1 - d) * sums[i][j];
      EXPECT_NEAR(vq->embedSum()[i][j].item<double>(), m, 1e-4);
      EXPECT_NEAR(vq->codebook()[i][j].item<double>(), m / smoothed, 1e-4) << i << "," << j;
    }
  }
}

TEST(VectorQuantizer, LaplaceSmoothingNeverDividesByZero) {
  VectorQuantizer vq(small());
  torch::NoGradGuard no_grad;
  vq->clusterSize().zero_();
  vq->embedSum().zero_();
  LocalStatsReducer local;
  vq->update(local, 0);  // no forward: nothing pending, all counts stay zero
  EXPECT_TRUE(torch::isfinite(vq->codebook()).all().item<bool>());
  vq->train();
  vq->forward(torch::randn({1, 4, 2, 2}));
  vq->update(local, 1);
  EXPECT_TRUE(torch::isfinite(vq->codebook()).all().item<bool>());
}

TEST(VectorQuantizer, KMeansInitFindsClustersDeterministically) {
  auto o = small(4, 2);
  o.init = CodebookInit::kKMeans;
  o.kmeans_iters = 5;
  const std::vector<std::vector<float>> centers{{5, 5}, {-5, 5}, {5, -5}, {-5, -5}};
  std::vector<at::Tensor> points;
  for (const auto& c : centers) {
    points.push_back(torch::tensor(c).unsqueeze(0) + 0.1 * torch::randn({25, 2}));
  }
  const at::Tensor flat = at::cat(points);  // [100, 2]
  const at::Tensor z = flat.reshape({1, 10, 10, 2}).permute({0, 3, 1, 2}).contiguous();
  LocalStatsReducer local;
  VectorQuantizer a(o), b(o);
  EXPECT_FALSE(a->initialized());
  a->initialize(z, local);
  b->initialize(z, local);
  EXPECT_TRUE(a->initialized());
  EXPECT_TRUE(torch::equal(a->codebook(), b->codebook()));
  for (const auto& c : centers) {
    const at::Tensor dist = (a->codebook() - torch::tensor(c)).pow(2).sum(1).min();
    EXPECT_LT(dist.item<double>(), 0.1) << "no code near (" << c[0] << ", " << c[1] << ")";
  }
  EXPECT_NEAR(a->clusterSize().sum().item<double>(), 100, 1e-3);
}

TEST(VectorQuantizer, DeadCodesRestartFromEncoderOutputs) {
  auto o = small(8, 2);
  o.restart_threshold = 0.5;
  o.restart_every = 1;
  VectorQuantizer vq(o);
  torch::NoGradGuard no_grad;
  vq->clusterSize().fill_(1.0f);
  vq->embedSum().copy_(vq->codebook());
  at::Tensor usage = vq->named_buffers()["usage"];
  usage.zero_();
  usage[0] = 100.0f;  // only code 0 has been used recently
  vq->train();
  const at::Tensor flat = torch::randn({16, 2});
  vq->forward(flat.reshape({1, 4, 4, 2}).permute({0, 3, 1, 2}).contiguous());
  LocalStatsReducer local;
  vq->update(local, 0);
  const CodebookHealth h = vq->health();
  EXPECT_GT(h.restarts, 0);
  // Every restarted code is one of this step's inputs.
  int matched = 0;
  for (std::int64_t i = 0; i < 8; ++i) {
    if ((flat - vq->codebook()[i]).pow(2).sum(1).min().item<double>() < 1e-10) ++matched;
  }
  EXPECT_EQ(matched, h.restarts);
}

TEST(VectorQuantizer, NormalisedAndProjectedLookups) {
  auto o = small(8, 6);
  o.l2_normalize = true;
  o.lookup_dim = 3;
  VectorQuantizer vq(o);
  vq->train();
  const QuantizerOutput out = vq->forward(torch::randn({2, 6, 3, 3}));
  EXPECT_EQ(out.quantized.sizes(), (std::vector<std::int64_t>{2, 6, 3, 3}));
  EXPECT_EQ(vq->codebook().size(1), 3);
  LocalStatsReducer local;
  vq->update(local, 0);
  EXPECT_TRUE(torch::allclose(vq->codebook().norm(2, 1), torch::ones({8}), 1e-4));
}

TEST(VectorQuantizer, HealthReportsUsageAndPerplexity) {
  auto o = small(4, 2);
  o.usage_window = 1;
  VectorQuantizer vq(o);
  torch::NoGradGuard no_grad;
  vq->codebook().copy_(torch::tensor({{0.0f, 0.0f}, {10.0f, 0.0f}, {0.0f, 10.0f}, {9.0f, 9.0f}}));
  vq->embedSum().copy_(vq->codebook());
  vq->clusterSize().fill_(1);
  vq->train();
  const at::Tensor flat = torch::tensor({{0.0f, 0.0f}, {10.0f, 0.0f}, {0.1f, 0.0f}, {9.9f, 0.0f}});
  vq->forward(flat.reshape({1, 2, 2, 2}).permute({0, 3, 1, 2}).contiguous());
  LocalStatsReducer local;
  vq->update(local, 0);
  const CodebookHealth h = vq->health();
  EXPECT_DOUBLE_EQ(h.usage, 0.5);
  EXPECT_NEAR(h.perplexity, 2.0, 1e-6);
}

TEST(VectorQuantizer, InitializedFollowsRestoredBuffers) {
  // initialized() keeps a host copy of the flag; a restore writes the buffers by name with copy_
  // (as trainer/state_io.cpp's restoreModules does) and must be seen in both directions.
  auto o = small(4, 2);
  o.init = CodebookInit::kKMeans;
  LocalStatsReducer local;
  VectorQuantizer trained(o), restored(o), fresh(o);
  EXPECT_FALSE(restored->initialized());
  trained->initialize(torch::randn({2, 2, 3, 3}), local);
  EXPECT_TRUE(trained->initialized());
  const auto restore = [](VectorQuantizer& into, VectorQuantizer& from) {
    torch::NoGradGuard no_grad;
    auto source = from->named_buffers();
    for (auto& item : into->named_buffers()) {
      at::Tensor target = item.value();
      target.copy_(source[item.key()]);
    }
  };
  restore(restored, trained);
  EXPECT_TRUE(restored->initialized());
  EXPECT_TRUE(torch::equal(restored->codebook(), trained->codebook()));
  restore(trained, fresh);
  EXPECT_FALSE(trained->initialized());
}

TEST(VectorQuantizer, UsageWindowRollsOverEveryWindowSteps) {
  auto o = small(4, 2);
  o.usage_window = 2;
  VectorQuantizer vq(o);
  torch::NoGradGuard no_grad;
  vq->codebook().copy_(torch::tensor({{0.0f, 0.0f}, {10.0f, 0.0f}, {0.0f, 10.0f}, {9.0f, 9.0f}}));
  vq->train();
  LocalStatsReducer local;
  auto buffers = vq->named_buffers();
  // Step s puts all four inputs on code s.
  for (std::int64_t s = 0; s < 3; ++s) {
    const at::Tensor flat = vq->codebook()[s].detach().clone().expand({4, 2}).contiguous();
    vq->forward(flat.reshape({1, 2, 2, 2}).permute({0, 3, 1, 2}).contiguous());
    vq->update(local, s);
    if (s == 1) {
      EXPECT_TRUE(
          torch::equal(buffers["last_window_counts"], torch::tensor({4.0f, 4.0f, 0.0f, 0.0f})));
      EXPECT_EQ(buffers["window_counts"].sum().item<float>(), 0.0f);
      EXPECT_EQ(buffers["window_steps"].item<std::int64_t>(), 0);
    }
  }
  EXPECT_TRUE(torch::equal(buffers["window_counts"], torch::tensor({0.0f, 0.0f, 4.0f, 0.0f})));
  EXPECT_EQ(buffers["window_steps"].item<std::int64_t>(), 1);
  EXPECT_TRUE(torch::equal(buffers["last_window_counts"], torch::tensor({4.0f, 4.0f, 0.0f, 0.0f})));
}

}  // namespace
}  // namespace tessera::models
