#include "models/samplers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "models/unet.h"

namespace tessera::models {
namespace {

constexpr double kPoint = 0.5;  // the data: every pixel +0.5, or every pixel -0.5
const std::vector<std::int64_t> kShape{1, 4, 4};

// E[x0 | x_t] for the two-point data set under x_t = a x0 + s eps (a, s per sample, [B, 1, 1, 1]);
// `only` >= 0 restricts the data set to one point (label 0: +0.5, label 1: -0.5).
at::Tensor posteriorMean(const at::Tensor& xt, const at::Tensor& a, const at::Tensor& s,
                         const at::Tensor& only = {}) {
  const at::Tensor plus = at::full_like(xt, kPoint), minus = at::full_like(xt, -kPoint);
  const auto logw = [&](const at::Tensor& x0) {
    return -(xt - a * x0).pow(2).reshape({xt.size(0), -1}).sum(1) / (2 * s.view({-1}).pow(2));
  };
  at::Tensor w_plus = at::sigmoid(logw(plus) - logw(minus));  // P(+ | x_t)
  if (only.defined()) {
    w_plus = at::where(only.eq(0), at::ones_like(w_plus),
                       at::where(only.eq(1), at::zeros_like(w_plus), w_plus));
  }
  const at::Tensor w = w_plus.view({-1, 1, 1, 1});
  return w * plus + (1 - w) * minus;
}

// An oracle of the Gaussian process predicting eps (through its exact x0).
LabeledDenoiserFn gaussianOracle(const GaussianDiffusion& d) {
  return [&d](const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
    const at::Tensor idx = t.round().to(at::kLong);
    const at::Tensor abar = d.gather(d.alphasCumprod(), idx, x);
    const at::Tensor a = abar.sqrt(), s = (1 - abar).sqrt();
    const at::Tensor x0 = posteriorMean(x, a, s, labels);
    return (x - a * x0) / s;
  };
}

DenoiserFn unlabeled(const LabeledDenoiserFn& f) {
  return [f](const at::Tensor& x, const at::Tensor& t) { return f(x, t, at::Tensor()); };
}

// The velocity oracle of the interpolation process: x_t = (1 - t) x0 + t eps, v = (x_t - x0_hat) /
// t.
DenoiserFn flowOracle(const FlowMatching& flow) {
  return [&flow](const at::Tensor& x, const at::Tensor& model_time) {
    const at::Tensor t =
        (model_time / flow.options().time_scale).to(x.scalar_type()).view({-1, 1, 1, 1});
    const at::Tensor x0 = posteriorMean(x, 1 - t, t);
    return (x - x0) / t;
  };
}

// RMS distance of each sample to its nearest data point, and which point (+1 / -1).
std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& samples) {
  const at::Tensor flat = samples.reshape({samples.size(0), -1});
  const at::Tensor dp = (flat - kPoint).pow(2).mean(1).sqrt();
  const at::Tensor dm = (flat + kPoint).pow(2).mean(1).sqrt();
  return {at::minimum(dp, dm), at::where(dp.lt(dm), at::ones_like(dp), -at::ones_like(dp))};
}

const auto kFloat = torch::TensorOptions().dtype(torch::kFloat);

TEST(Samplers, RespacedTimesteps) {
  const auto ts = respacedTimesteps(1000, 50);
  ASSERT_EQ(ts.size(), 50u);
  EXPECT_EQ(ts.front(), 0);
  EXPECT_EQ(ts.back(), 999);
  for (std::size_t i = 1; i < ts.size(); ++i) EXPECT_GT(ts[i], ts[i - 1]);
  const auto all = respacedTimesteps(1000, 1000);
  for (std::int64_t i = 0; i < 1000; ++i) ASSERT_EQ(all[static_cast<std::size_t>(i)], i);
  EXPECT_EQ(respacedTimesteps(1000, 1), std::vector<std::int64_t>{999});
  EXPECT_THROW(respacedTimesteps(10, 11), c10::Error);
}

struct GaussianCase {
  SamplerKind kind;
  std::int64_t steps;
  double eta;
};

TEST(Samplers, OracleOfTwoPointDataLandsOnThePoints) {
  GaussianDiffusion d(DiffusionOptions{});
  const DenoiserFn model = unlabeled(gaussianOracle(d));
  const std::int64_t n = 32;
  for (const GaussianCase& c :
       {GaussianCase{SamplerKind::kAncestral, 1000, 0},
        GaussianCase{SamplerKind::kAncestral, 100, 0}, GaussianCase{SamplerKind::kDdim, 50, 0},
        GaussianCase{SamplerKind::kDdim, 50, 1}, GaussianCase{SamplerKind::kDpmSolver2M, 20, 0}}) {
    SamplerOptions s;
    s.kind = c.kind;
    s.steps = c.steps;
    s.eta = c.eta;
    s.seed = 7;
    const at::Tensor x = sampleDiffusion(d, model, s, kShape, 0, n, kFloat);
    ASSERT_EQ(x.sizes(), (std::vector<std::int64_t>{n, 1, 4, 4}));
    const auto [dist, which] = nearest(x);
    EXPECT_LT(dist.max().item<double>(), 0.05) << toString(c.kind) << " " << c.steps;
    // Both points are drawn (about half each).
    const double plus = which.eq(1).to(torch::kDouble).mean().item<double>();
    EXPECT_GT(plus, 0.15) << toString(c.kind);
    EXPECT_LT(plus, 0.85) << toString(c.kind);
  }
}

TEST(Samplers, FlowOracleLandsOnThePoints) {
  FlowMatching flow;
  const DenoiserFn model = flowOracle(flow);
  for (SamplerKind kind : {SamplerKind::kEuler, SamplerKind::kHeun}) {
    SamplerOptions s;
    s.kind = kind;
    s.steps = kind == SamplerKind::kEuler ? 100 : 20;
    s.seed = 3;
    const at::Tensor x = sampleFlow(flow, model, s, kShape, 0, 32, kFloat);
    ASSERT_EQ(x.sizes(), (std::vector<std::int64_t>{32, 1, 4, 4}));
    const auto [dist, which] = nearest(x);
    EXPECT_LT(dist.max().item<double>(), 0.05) << toString(kind);
    const double plus = which.eq(1).to(torch::kDouble).mean().item<double>();
    EXPECT_GT(plus, 0.15);
    EXPECT_LT(plus, 0.85);
  }
  SamplerOptions wrong;
  wrong.kind = SamplerKind::kDdim;
  EXPECT_THROW(sampleFlow(flow, model, wrong, kShape, 0, 2, kFloat), c10::Error);
  GaussianDiffusion d(DiffusionOptions{});
  wrong.kind = SamplerKind::kEuler;
  EXPECT_THROW(sampleDiffusion(d, model, wrong, kShape, 0, 2, kFloat), c10::Error);
}

// Data N(0, sd^2) per pixel: E[x0 | x_t] = a sd^2 / (a^2 sd^2 + s^2) x_t for x_t = a x0 + s eps.
// Every sampler must reproduce the data's variance (a wrong variance or step formula would not).
TEST(Samplers, GaussianDataKeepsItsVariance) {
  const double sd = 0.5;
  GaussianDiffusion d(DiffusionOptions{});
  const DenoiserFn eps_model = [&](const at::Tensor& x, const at::Tensor& t) {
    const at::Tensor abar = d.gather(d.alphasCumprod(), t.round().to(at::kLong), x);
    const at::Tensor a = abar.sqrt(), s = (1 - abar).sqrt();
    const at::Tensor x0 = a * sd * sd / (abar * sd * sd + s * s) * x;
    return (x - a * x0) / s;
  };
  FlowMatching flow;
  const DenoiserFn v_model = [&](const at::Tensor& x, const at::Tensor& model_time) {
    const at::Tensor t = (model_time / flow.options().time_scale).view({-1, 1});
    const at::Tensor a = 1 - t;
    const at::Tensor x0 = a * sd * sd / (a * a * sd * sd + t * t) * x;
    return (x - x0) / t;
  };
  const std::vector<std::int64_t> shape{64};
  // Relative tolerance on the variance: 6% where the sampler has converged (4096 values: the
  // estimate's own sd is 2.2%), 13% for DDIM-50 and DPM-Solver++-20, whose discretisation error
  // on this data at the low-noise end is about -11%.
  struct Case {
    SamplerKind kind;
    std::int64_t steps;
    double eta, tolerance;
  };
  for (const Case& c :
       {Case{SamplerKind::kAncestral, 1000, 0, 0.06}, Case{SamplerKind::kAncestral, 250, 0, 0.06},
        Case{SamplerKind::kDdim, 200, 0, 0.06}, Case{SamplerKind::kDdim, 250, 1, 0.06},
        Case{SamplerKind::kDdim, 50, 0, 0.13}, Case{SamplerKind::kDpmSolver2M, 50, 0, 0.06},
        Case{SamplerKind::kDpmSolver2M, 20, 0, 0.13}, Case{SamplerKind::kEuler, 100, 0, 0.06},
        Case{SamplerKind::kHeun, 20, 0, 0.06}}) {
    SamplerOptions s;
    s.kind = c.kind;
    s.steps = c.steps;
    s.eta = c.eta;
    s.clip_x0 = false;
    s.seed = 21;
    const at::Tensor x = isGaussianSampler(c.kind)
                             ? sampleDiffusion(d, eps_model, s, shape, 0, 64, kFloat)
                             : sampleFlow(flow, v_model, s, shape, 0, 64, kFloat);
    const double var = x.to(torch::kDouble).pow(2).mean().item<double>();
    EXPECT_NEAR(var, sd * sd, c.tolerance * sd * sd) << toString(c.kind) << " " << c.steps;
    EXPECT_NEAR(x.mean().item<double>(), 0.0, 0.05) << toString(c.kind);
  }
}

TEST(Samplers, DdimWithEtaZeroIsDeterministic) {
  GaussianDiffusion d(DiffusionOptions{});
  const DenoiserFn model = unlabeled(gaussianOracle(d));
  SamplerOptions s;
  s.kind = SamplerKind::kDdim;
  s.steps = 20;
  s.seed = 11;
  const at::Tensor a = sampleDiffusion(d, model, s, kShape, 0, 8, kFloat);
  EXPECT_TRUE(torch::equal(a, sampleDiffusion(d, model, s, kShape, 0, 8, kFloat)));
  // eta = 0 adds no noise after x_T: the result is a function of x_T alone. A model that counts
  // stages sees no other randomness: with eta > 0 the same x_T ends elsewhere.
  SamplerOptions noisy = s;
  noisy.eta = 1.0;
  EXPECT_FALSE(torch::equal(a, sampleDiffusion(d, model, noisy, kShape, 0, 8, kFloat)));
  SamplerOptions other_seed = s;
  other_seed.seed = 12;
  EXPECT_FALSE(torch::equal(a, sampleDiffusion(d, model, other_seed, kShape, 0, 8, kFloat)));
}

TEST(Samplers, NoiseIsKeyedBySampleIndex) {
  GaussianDiffusion d(DiffusionOptions{});
  const DenoiserFn model = unlabeled(gaussianOracle(d));
  FlowMatching flow;
  for (SamplerKind kind : {SamplerKind::kAncestral, SamplerKind::kDdim, SamplerKind::kDpmSolver2M,
                           SamplerKind::kEuler, SamplerKind::kHeun}) {
    SamplerOptions s;
    s.kind = kind;
    s.steps = 10;
    s.eta = 0.5;
    s.seed = 5;
    const auto run = [&](std::int64_t first, std::int64_t count) {
      return isGaussianSampler(kind)
                 ? sampleDiffusion(d, model, s, kShape, first, count, kFloat)
                 : sampleFlow(flow, flowOracle(flow), s, kShape, first, count, kFloat);
    };
    // One "rank" with samples 0..5, or two with 0..2 and 3..5.
    const at::Tensor one = run(0, 6);
    const at::Tensor two = at::cat({run(0, 3), run(3, 3)});
    EXPECT_TRUE(torch::allclose(one, two, 1e-5, 1e-6)) << toString(kind);
    EXPECT_EQ(run(0, 0).size(0), 0);
  }
}

TEST(Samplers, EverySamplerGivesFiniteOutputsWithAUNet) {
  UNetOptions o;
  o.in_channels = 1;
  o.resolution = 8;
  o.ch = 16;
  o.ch_mult = {1, 2};
  o.num_res_blocks = 1;
  o.attn_resolutions = {4};
  o.norm_groups = 4;
  o.num_classes = 2;
  torch::manual_seed(0);
  UNet net(o);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) {
      if (p.dim() > 1 && p.abs().sum().item<double>() == 0) p.normal_(0, 0.05);
    }
  }
  net->eval();
  const LabeledDenoiserFn labeled = [&](const at::Tensor& x, const at::Tensor& t,
                                        const at::Tensor& y) { return net->forward(x, t, y); };
  const std::vector<std::int64_t> shape{1, 8, 8};
  for (Prediction p : {Prediction::kEps, Prediction::kX0, Prediction::kV}) {
    DiffusionOptions dopt;
    dopt.prediction = p;
    GaussianDiffusion d(dopt);
    for (SamplerKind kind :
         {SamplerKind::kAncestral, SamplerKind::kDdim, SamplerKind::kDpmSolver2M}) {
      SamplerOptions s;
      s.kind = kind;
      s.steps = 4;
      s.eta = 0.3;
      const DenoiserFn model = classifierFreeGuidance(labeled, torch::tensor({0, 1, 2}), 2, 2.0);
      const at::Tensor x = sampleDiffusion(d, model, s, shape, 0, 3, kFloat);
      EXPECT_EQ(x.sizes(), (std::vector<std::int64_t>{3, 1, 8, 8}));
      EXPECT_TRUE(x.isfinite().all().item<bool>()) << toString(kind) << " " << toString(p);
    }
  }
  FlowMatching flow;
  for (SamplerKind kind : {SamplerKind::kEuler, SamplerKind::kHeun}) {
    SamplerOptions s;
    s.kind = kind;
    s.steps = 4;
    const DenoiserFn model = classifierFreeGuidance(labeled, torch::tensor({1, 0}), 2, 1.5);
    const at::Tensor x = sampleFlow(flow, model, s, shape, 10, 2, kFloat);
    EXPECT_EQ(x.sizes(), (std::vector<std::int64_t>{2, 1, 8, 8}));
    EXPECT_TRUE(x.isfinite().all().item<bool>()) << toString(kind);
  }
}

TEST(Samplers, ClassifierFreeGuidanceSamplesTheLabelsPoint) {
  GaussianDiffusion d(DiffusionOptions{});
  const LabeledDenoiserFn oracle = gaussianOracle(d);
  int calls = 0;
  std::int64_t batch = 0;
  const LabeledDenoiserFn counted = [&](const at::Tensor& x, const at::Tensor& t,
                                        const at::Tensor& y) {
    ++calls;
    batch = x.size(0);
    return oracle(x, t, y);
  };
  const at::Tensor labels = torch::tensor({0, 1, 0, 1, 1, 0, 0, 1});
  const at::Tensor expected = torch::where(labels.eq(0), torch::ones({8}), -torch::ones({8}));
  for (double scale : {1.0, 3.0}) {
    calls = 0;
    SamplerOptions s;
    s.kind = SamplerKind::kDdim;
    s.steps = 25;
    const at::Tensor x = sampleDiffusion(d, classifierFreeGuidance(counted, labels, 2, scale), s,
                                         kShape, 0, 8, kFloat);
    EXPECT_EQ(calls, 25);
    EXPECT_EQ(batch, scale == 1.0 ? 8 : 16);  // guidance: conditional and null in one batch
    const auto [dist, which] = nearest(x);
    EXPECT_TRUE(torch::equal(which, expected)) << scale;
    EXPECT_LT(dist.max().item<double>(), 0.05) << scale;
  }
  // The guided prediction is uncond + scale (cond - uncond).
  const at::Tensor x = torch::randn({8, 1, 4, 4});
  const at::Tensor t = torch::full({8}, 500.0f);
  const at::Tensor cond = oracle(x, t, labels);
  const at::Tensor uncond = oracle(x, t, torch::full({8}, 2, torch::kLong));
  EXPECT_TRUE(torch::allclose(classifierFreeGuidance(oracle, labels, 2, 2.5)(x, t),
                              uncond + 2.5 * (cond - uncond), 1e-5, 1e-5));
}

}  // namespace
}  // namespace tessera::models
