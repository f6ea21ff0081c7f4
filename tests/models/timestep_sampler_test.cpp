// Timestep draws in one process, with ranks simulated by slices of the global batch (the real
// multi-process runs are in timestep_sampler_mpi_test.cpp).
#include "models/timestep_sampler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "models/stats_reducer.h"

namespace tessera::models {
namespace {

// One rank's slice of a global batch of g over `ranks` ranks (the first g % ranks get one more).
std::pair<std::int64_t, std::int64_t> slice(std::int64_t g, int ranks, int rank) {
  const std::int64_t base = g / ranks, extra = g % ranks;
  const std::int64_t begin = rank * base + std::min<std::int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

// Concatenation of every simulated rank's draws.
TimestepDraw drawOnRanks(const TimestepSampler& s, std::int64_t step, std::int64_t g, int ranks) {
  std::vector<at::Tensor> t, w;
  for (int r = 0; r < ranks; ++r) {
    const auto [b, e] = slice(g, ranks, r);
    const TimestepDraw d = s.draw(step, g, b, e);
    t.push_back(d.t);
    w.push_back(d.weights);
  }
  return {at::cat(t), at::cat(w)};
}

// A deterministic synthetic loss: f(t) = 0.1 + (t / T)^2 (scale per timestep), times a keyed
// positive noise factor per global sample when noisy.
double syntheticF(std::int64_t t, std::int64_t n) {
  const double x = static_cast<double>(t) / static_cast<double>(n);
  return 0.1 + x * x;
}

class CountingReducer final : public StatsReducer {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void sumInPlace(at::Tensor& t) override {
    ++sums;
    EXPECT_EQ(t.scalar_type(), at::kDouble);
  }
  at::Tensor allGather(const at::Tensor& t) override {
    ++others;
    return t;
  }
  void broadcast(at::Tensor&, int) override { ++others; }
  int sums = 0, others = 0;
};

TEST(TimestepSampler, UniformDrawsAreUniformAndKeyed) {
  TimestepSamplerOptions o;
  o.timesteps = 10;
  o.seed = 3;
  TimestepSampler s(o);
  at::Tensor counts = torch::zeros({10}, torch::kLong);
  for (std::int64_t step = 0; step < 200; ++step) {
    const TimestepDraw d = s.draw(step, 100, 0, 100);
    counts.index_add_(0, d.t, torch::ones({100}, torch::kLong));
    EXPECT_TRUE(torch::equal(d.weights, torch::ones({100})));
  }
  // 20000 draws over 10 values: 2000 each, sd ~42.
  EXPECT_LT((counts - 2000).abs().max().item<std::int64_t>(), 250) << counts;
  EXPECT_TRUE(torch::equal(s.draw(5, 100, 0, 100).t, s.draw(5, 100, 0, 100).t));
  EXPECT_FALSE(torch::equal(s.draw(5, 100, 0, 100).t, s.draw(6, 100, 0, 100).t));
  TimestepSamplerOptions other = o;
  other.seed = 4;
  EXPECT_FALSE(
      torch::equal(s.draw(5, 100, 0, 100).t, TimestepSampler(other).draw(5, 100, 0, 100).t));
}

TEST(TimestepSampler, StratifiedCoversEveryStratumOncePerStep) {
  for (std::int64_t g : {1, 8, 10, 40, 250, 1000}) {  // divisors of T
    TimestepSamplerOptions o;
    o.kind = TimestepSampling::kStratified;
    o.seed = 17;
    TimestepSampler s(o);
    for (std::int64_t step = 0; step < 5; ++step) {
      const at::Tensor t = s.draw(step, g, 0, g).t;
      std::vector<std::int64_t> strata;
      for (std::int64_t i = 0; i < g; ++i) strata.push_back(t[i].item<std::int64_t>() * g / 1000);
      std::sort(strata.begin(), strata.end());
      for (std::int64_t j = 0; j < g; ++j) ASSERT_EQ(strata[static_cast<std::size_t>(j)], j) << g;
    }
  }
  // Any global batch: the uniforms cover the G strata of [0, 1) once, and each t lies in its
  // stratum's timesteps.
  for (std::int64_t g : {3, 7, 24, 999, 1500}) {
    for (std::int64_t step = 0; step < 3; ++step) {
      const at::Tensor u = keyedUniforms(17, step, g, 0, g, true);
      std::set<std::int64_t> strata;
      for (std::int64_t i = 0; i < g; ++i) {
        const double v = u[i].item<double>();
        ASSERT_GE(v, 0.0);
        ASSERT_LT(v, 1.0);
        strata.insert(static_cast<std::int64_t>(std::floor(v * static_cast<double>(g))));
      }
      EXPECT_EQ(static_cast<std::int64_t>(strata.size()), g);
    }
  }
}

TEST(TimestepSampler, StratifiedDrawsAreMarginallyUniform) {
  TimestepSamplerOptions o;
  o.kind = TimestepSampling::kStratified;
  o.timesteps = 10;
  TimestepSampler s(o);
  at::Tensor first = torch::zeros({10}, torch::kLong);
  for (std::int64_t step = 0; step < 4000; ++step) {
    first[s.draw(step, 4, 0, 1).t[0].item<std::int64_t>()] += 1;  // sample 0 of each step
  }
  EXPECT_LT((first - 400).abs().max().item<std::int64_t>(), 80) << first;
}

TEST(TimestepSampler, DrawsAreTheSameForOneToFourRanks) {
  for (TimestepSampling kind :
       {TimestepSampling::kUniform, TimestepSampling::kStratified, TimestepSampling::kLossAware}) {
    TimestepSamplerOptions o;
    o.kind = kind;
    o.timesteps = 50;
    o.history = 2;
    o.seed = 23;
    TimestepSampler s(o);
    if (kind == TimestepSampling::kLossAware) {  // a warmed-up, non-uniform distribution
      for (std::int64_t step = 0; step < 40; ++step) {
        const TimestepDraw d = s.draw(step, 24, 0, 24);
        at::Tensor losses = d.t.to(torch::kDouble).div(50).add(0.1);
        s.applyGlobalStatistics(s.localStatistics(d.t, losses));
      }
      ASSERT_TRUE(s.warmedUp());
    }
    for (std::int64_t g : {24, 25}) {
      for (std::int64_t step : {0, 1, 77}) {
        const TimestepDraw one = s.draw(step, g, 0, g);
        for (int ranks = 2; ranks <= 4; ++ranks) {
          const TimestepDraw many = drawOnRanks(s, step, g, ranks);
          EXPECT_TRUE(torch::equal(one.t, many.t)) << toString(kind) << " " << ranks;
          EXPECT_TRUE(torch::equal(one.weights, many.weights)) << toString(kind) << " " << ranks;
        }
      }
    }
  }
}

TEST(TimestepSampler, LossAwareWarmsUpThenConvergesToTheOptimum) {
  const std::int64_t n = 100, g = 64;
  TimestepSamplerOptions o;
  o.kind = TimestepSampling::kLossAware;
  o.timesteps = n;
  o.history = 10;
  o.seed = 5;
  TimestepSampler s(o);
  LocalStatsReducer local;
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(1);
  // L = f(t) (1 + 0.3 z): E[L^2] = 1.09 f(t)^2, so the optimum is p* ~ f, mixed with uniform.
  at::Tensor f = torch::empty({n}, torch::kDouble);
  for (std::int64_t t = 0; t < n; ++t) f[t] = syntheticF(t, n);
  const at::Tensor optimum = f / f.sum() * (1 - o.uniform_mix) + o.uniform_mix / n;
  std::int64_t step = 0;
  double estimate_sum = 0;
  std::int64_t estimate_steps = 0;
  for (; step < 400; ++step) {
    const bool warm = s.warmedUp();
    const TimestepDraw d = s.draw(step, g, 0, g);
    if (!warm) {
      EXPECT_TRUE(torch::equal(d.weights, torch::ones({g})));
      EXPECT_TRUE(torch::allclose(s.probabilities(), torch::full({n}, 1.0 / n, torch::kDouble)));
    } else {
      // Importance weights 1 / (T p_t) of the drawn timesteps.
      const at::Tensor p = s.probabilities().index_select(0, d.t);
      EXPECT_TRUE(torch::allclose(d.weights.to(torch::kDouble), 1.0 / (n * p), 1e-6));
    }
    const at::Tensor losses =
        f.index_select(0, d.t) * (1 + 0.3 * torch::randn({g}, gen, torch::kDouble));
    if (warm && step >= 200) {
      estimate_sum += (losses * d.weights.to(torch::kDouble)).mean().item<double>();
      ++estimate_steps;
    }
    s.update(d.t, losses, local);
  }
  ASSERT_TRUE(s.warmedUp());
  // p tracks the optimum: total variation distance small (noise of 10-sample second moments).
  const double tv = 0.5 * (s.probabilities() - optimum).abs().sum().item<double>();
  EXPECT_LT(tv, 0.06) << tv;
  // The importance-weighted loss estimates the uniform-t mean of E[L] = mean f.
  EXPECT_NEAR(estimate_sum / static_cast<double>(estimate_steps), f.mean().item<double>(),
              0.02 * f.mean().item<double>());
  EXPECT_GT(s.weightSpread(), 5.0);  // f spans 0.1 .. 1.08
}

TEST(TimestepSampler, LossAwareExactOptimumForDeterministicLosses) {
  const std::int64_t n = 20;
  TimestepSamplerOptions o;
  o.kind = TimestepSampling::kLossAware;
  o.timesteps = n;
  o.history = 3;
  TimestepSampler s(o);
  at::Tensor f = torch::empty({n}, torch::kDouble);
  for (std::int64_t t = 0; t < n; ++t) f[t] = syntheticF(t, n);
  // Every timestep three times, over two "steps".
  const at::Tensor t = torch::arange(n).repeat({3});
  s.applyGlobalStatistics(s.localStatistics(t.slice(0, 0, n), f));
  EXPECT_FALSE(s.warmedUp());
  s.applyGlobalStatistics(s.localStatistics(t.slice(0, n), f.repeat({2})));
  ASSERT_TRUE(s.warmedUp());
  const at::Tensor expected = f / f.sum() * (1 - o.uniform_mix) + o.uniform_mix / n;
  EXPECT_TRUE(torch::allclose(s.probabilities(), expected, 1e-12, 1e-15));
  EXPECT_NEAR(s.probabilities().sum().item<double>(), 1.0, 1e-12);
  // The mean loss of the last step, per timestep.
  EXPECT_TRUE(torch::allclose(s.lastMeanLoss(), f, 1e-12));
}

TEST(TimestepSampler, LossAwareIdenticalOnSimulatedRanksAndOneAllReducePerStep) {
  const std::int64_t n = 30, g = 24;
  TimestepSamplerOptions o;
  o.kind = TimestepSampling::kLossAware;
  o.timesteps = n;
  o.history = 4;
  o.seed = 9;
  for (int ranks : {2, 3, 4}) {
    std::vector<TimestepSampler> samplers(static_cast<std::size_t>(ranks), TimestepSampler(o));
    TimestepSampler single(o);
    CountingReducer counter;
    for (std::int64_t step = 0; step < 60; ++step) {
      // The loss of global sample i at timestep t: a keyed function of both.
      const auto loss_of = [&](const at::Tensor& t, std::int64_t first) {
        return t.to(torch::kDouble).div(n).add(0.2) *
               (torch::arange(first, first + t.size(0), torch::kDouble).remainder(5).add(1));
      };
      at::Tensor total = torch::zeros({3, n}, torch::kDouble);
      for (int r = 0; r < ranks; ++r) {
        const auto [b, e] = slice(g, ranks, r);
        const TimestepDraw d = samplers[static_cast<std::size_t>(r)].draw(step, g, b, e);
        total += samplers[static_cast<std::size_t>(r)].localStatistics(d.t, loss_of(d.t, b));
      }
      for (auto& s : samplers) s.applyGlobalStatistics(total);
      const TimestepDraw d = single.draw(step, g, 0, g);
      single.update(d.t, loss_of(d.t, 0), counter);
      ASSERT_EQ(counter.sums, step + 1);
      ASSERT_EQ(counter.others, 0);
      for (const auto& s : samplers) {
        ASSERT_TRUE(torch::equal(s.probabilities(), samplers[0].probabilities()));
      }
      ASSERT_TRUE(torch::allclose(samplers[0].probabilities(), single.probabilities(), 1e-12, 0));
    }
    EXPECT_TRUE(single.warmedUp());
  }
}

TEST(TimestepSampler, UpdateIsOneAllReduceForEveryKind) {
  for (TimestepSampling kind : {TimestepSampling::kUniform, TimestepSampling::kStratified}) {
    TimestepSamplerOptions o;
    o.kind = kind;
    o.timesteps = 4;
    TimestepSampler s(o);
    CountingReducer counter;
    s.update(torch::tensor({0, 2, 2}), torch::tensor({1.0f, 2.0f, 4.0f}), counter);
    EXPECT_EQ(counter.sums, 1);
    const at::Tensor mean = s.lastMeanLoss();
    EXPECT_DOUBLE_EQ(mean[0].item<double>(), 1.0);
    EXPECT_TRUE(std::isnan(mean[1].item<double>()));
    EXPECT_DOUBLE_EQ(mean[2].item<double>(), 3.0);
    EXPECT_TRUE(s.warmedUp());
    EXPECT_TRUE(torch::equal(s.probabilities(), torch::full({4}, 0.25, torch::kDouble)));
    EXPECT_DOUBLE_EQ(s.weightSpread(), 1.0);
  }
}

TEST(TimestepSampler, StateRoundTrips) {
  TimestepSamplerOptions o;
  o.kind = TimestepSampling::kLossAware;
  o.timesteps = 16;
  o.history = 2;
  TimestepSampler s(o);
  LocalStatsReducer local;
  for (std::int64_t step = 0; step < 30; ++step) {
    const TimestepDraw d = s.draw(step, 8, 0, 8);
    s.update(d.t, d.t.to(torch::kFloat).add(1).sqrt() * (step % 3 + 1), local);
  }
  ASSERT_TRUE(s.warmedUp());
  const auto state = s.state("sampler/");
  ASSERT_EQ(state.size(), 3u);
  std::map<std::string, at::Tensor> saved;
  for (const auto& [name, tensor] : state) saved[name] = tensor;
  EXPECT_EQ(saved.count("sampler/history"), 1u);
  TimestepSampler restored(o);
  EXPECT_FALSE(restored.warmedUp());
  restored.loadState(saved, "sampler/");
  EXPECT_TRUE(torch::equal(restored.probabilities(), s.probabilities()));
  EXPECT_TRUE(torch::equal(restored.draw(31, 8, 0, 8).t, s.draw(31, 8, 0, 8).t));
  // And both continue alike.
  const TimestepDraw d = s.draw(31, 8, 0, 8);
  s.update(d.t, torch::ones({8}), local);
  restored.update(d.t, torch::ones({8}), local);
  EXPECT_TRUE(torch::equal(restored.probabilities(), s.probabilities()));
  // A state of another shape, or a missing entry, is an error.
  TimestepSamplerOptions other = o;
  other.history = 3;
  TimestepSampler wrong(other);
  EXPECT_THROW(wrong.loadState(saved, "sampler/"), c10::Error);
  EXPECT_THROW(restored.loadState(saved), c10::Error);
}

TEST(TimestepSampler, RejectsBadSlices) {
  TimestepSampler s(TimestepSamplerOptions{});
  EXPECT_THROW(s.draw(0, 8, 4, 9), c10::Error);
  EXPECT_THROW(s.draw(0, 8, 5, 4), c10::Error);
  EXPECT_THROW(s.draw(-1, 8, 0, 8), c10::Error);
  EXPECT_EQ(s.draw(0, 8, 3, 3).t.numel(), 0);
  EXPECT_THROW(s.localStatistics(torch::tensor({1000}), torch::tensor({1.0})), c10::Error);
}

TEST(ContinuousTime, StratifiedUniformAndLogitNormal) {
  ContinuousTimeOptions o;
  o.seed = 2;
  const at::Tensor t = drawContinuousTimes(o, 3, 16, 0, 16);
  std::set<std::int64_t> strata;
  for (std::int64_t i = 0; i < 16; ++i)
    strata.insert(static_cast<std::int64_t>(t[i].item<double>() * 16));
  EXPECT_EQ(strata.size(), 16u);
  // Rank slices give the global draws.
  EXPECT_TRUE(torch::equal(
      torch::cat({drawContinuousTimes(o, 3, 16, 0, 5), drawContinuousTimes(o, 3, 16, 5, 16)}), t));
  // Logit-normal through the inverse CDF: the median maps to sigmoid(m); quantiles match.
  o.distribution = FlowTimeDistribution::kLogitNormal;
  o.logit_mean = 0.5;
  o.logit_std = 1.5;
  const at::Tensor ln = drawContinuousTimes(o, 0, 20000, 0, 20000);
  EXPECT_GE(ln.min().item<double>(), 0.0);
  EXPECT_LE(ln.max().item<double>(), 1.0);
  const at::Tensor logits = torch::log(ln / (1 - ln));
  EXPECT_NEAR(logits.mean().item<double>(), 0.5, 0.01);  // stratified: very close
  EXPECT_NEAR(logits.std().item<double>(), 1.5, 0.01);
  // The stratification survives the map: the same strata order as the uniforms.
  o.distribution = FlowTimeDistribution::kUniform;
  const at::Tensor u = drawContinuousTimes(o, 0, 20000, 0, 20000);
  EXPECT_TRUE(torch::equal(u.argsort(), ln.argsort()));
}

}  // namespace
}  // namespace tessera::models
