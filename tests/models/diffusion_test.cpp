#include "models/diffusion.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace tessera::models {
namespace {

double at1(const at::Tensor& t, std::int64_t i) {
  return t[i].item<double>();
}

TEST(Diffusion, LinearScheduleAgainstClosedForm) {
  GaussianDiffusion d(DiffusionOptions{});
  ASSERT_EQ(d.betas().size(0), 1000);
  EXPECT_DOUBLE_EQ(at1(d.betas(), 0), 1e-4);
  EXPECT_NEAR(at1(d.betas(), 999), 0.02, 1e-15);
  EXPECT_NEAR(at1(d.betas(), 500), 1e-4 + (0.02 - 1e-4) * 500.0 / 999.0, 1e-15);
  EXPECT_EQ(d.alphasCumprod().scalar_type(), at::kDouble);
  // abar_t = prod_{s <= t} (1 - beta_s), beta_s linear: compare with a long double product.
  long double prod = 1;
  for (int t = 0; t < 1000; ++t) {
    prod *= 1.0L - (1e-4L + (0.02L - 1e-4L) * t / 999.0L);
    if (t % 97 == 0 || t == 999) {
      EXPECT_NEAR(at1(d.alphasCumprod(), t), static_cast<double>(prod),
                  1e-13 * static_cast<double>(prod) + 1e-16);
      EXPECT_DOUBLE_EQ(d.alphaCumprod(t), at1(d.alphasCumprod(), t));
    }
  }
  EXPECT_DOUBLE_EQ(at1(d.alphasCumprodPrev(), 0), 1.0);
  EXPECT_DOUBLE_EQ(at1(d.alphasCumprodPrev(), 10), at1(d.alphasCumprod(), 9));
  // The known end point of DDPM's schedule: abar_999 ~ 4.04e-5.
  EXPECT_NEAR(at1(d.alphasCumprod(), 999), 4.0358e-5, 1e-8);
}

TEST(Diffusion, CosineScheduleAgainstClosedForm) {
  DiffusionOptions o;
  o.schedule = BetaSchedule::kCosine;
  GaussianDiffusion d(o);
  const double s = 0.008;
  const auto f = [s](double u) {
    const double c = std::cos((u + s) / (1 + s) * M_PI / 2);
    return c * c;
  };
  // The betas telescope: abar_t = f((t + 1) / T) / f(0) until they are clipped at 0.999.
  for (int t : {0, 1, 10, 250, 500, 750, 990}) {
    const double expected = f((t + 1) / 1000.0) / f(0);
    EXPECT_NEAR(at1(d.alphasCumprod(), t), expected, 1e-12 * std::max(1.0, expected)) << t;
  }
  EXPECT_DOUBLE_EQ(at1(d.betas(), 999), 0.999);  // f(1) = 0: the clip
  EXPECT_LE(d.betas().max().item<double>(), 0.999);
  EXPECT_GT(d.betas().min().item<double>(), 0.0);
  // Nichol & Dhariwal's cosine betas start near 4e-5.
  EXPECT_NEAR(at1(d.betas(), 0), 1.0 - f(1e-3) / f(0), 1e-15);
}

TEST(Diffusion, PosteriorAgainstClosedForms) {
  for (BetaSchedule schedule : {BetaSchedule::kLinear, BetaSchedule::kCosine}) {
    DiffusionOptions o;
    o.schedule = schedule;
    GaussianDiffusion d(o);
    for (int t : {1, 2, 100, 500, 998, 999}) {
      const double beta = at1(d.betas(), t), abar = at1(d.alphasCumprod(), t);
      const double abar_prev = at1(d.alphasCumprod(), t - 1);
      // Precision of the product of q(x_t | x_{t-1}) and q(x_{t-1} | x_0).
      const double var = 1.0 / ((1 - beta) / beta + 1.0 / (1 - abar_prev));
      EXPECT_NEAR(at1(d.posteriorVariance(), t), var, 1e-12 * var) << t;
      EXPECT_NEAR(at1(d.posteriorLogVarianceClipped(), t), std::log(var), 1e-10) << t;
      // Mean = var * (sqrt(abar_prev) x0 / (1 - abar_prev) + sqrt(1 - beta) x_t / beta).
      EXPECT_NEAR(at1(d.posteriorMeanCoef1(), t), var * std::sqrt(abar_prev) / (1 - abar_prev),
                  1e-10)
          << t;
      EXPECT_NEAR(at1(d.posteriorMeanCoef2(), t), var * std::sqrt(1 - beta) / beta, 1e-10) << t;
      (void)abar;
    }
    EXPECT_EQ(at1(d.posteriorVariance(), 0), 0.0);
    EXPECT_DOUBLE_EQ(at1(d.posteriorLogVarianceClipped(), 0),
                     std::log(at1(d.posteriorVariance(), 1)));
    EXPECT_NEAR(at1(d.posteriorMeanCoef1(), 0), 1.0, 1e-12);  // x_{-1} is x_0
    EXPECT_DOUBLE_EQ(at1(d.posteriorMeanCoef2(), 0), 0.0);
  }
  // Through the tensor API: posterior() of a batch.
  GaussianDiffusion d(DiffusionOptions{});
  const at::Tensor x0 = torch::randn({2, 3}, torch::kDouble),
                   xt = torch::randn({2, 3}, torch::kDouble);
  const auto p = d.posterior(x0, xt, torch::tensor({0, 700}));
  EXPECT_TRUE(torch::allclose(p.mean[0], x0[0]));
  EXPECT_TRUE(torch::allclose(p.mean[1], at1(d.posteriorMeanCoef1(), 700) * x0[1] +
                                             at1(d.posteriorMeanCoef2(), 700) * xt[1]));
  EXPECT_EQ(p.variance.sizes(), (std::vector<std::int64_t>{2, 1}));
}

TEST(Diffusion, QSampleMoments) {
  GaussianDiffusion d(DiffusionOptions{});
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(5);
  const std::int64_t n = 400000;
  const at::Tensor x0 = at::full({n, 1}, 0.7, torch::kDouble);
  const at::Tensor noise = at::randn({n, 1}, gen, torch::kDouble);
  for (std::int64_t t : {0, 250, 999}) {
    const at::Tensor xt = d.qSample(x0, at::full({n}, t, torch::kLong), noise);
    const double abar = d.alphaCumprod(t);
    const double sd = std::sqrt(1 - abar);
    EXPECT_NEAR(xt.mean().item<double>(), std::sqrt(abar) * 0.7, 5 * sd / std::sqrt(n)) << t;
    EXPECT_NEAR(xt.var().item<double>(), 1 - abar, 5 * (1 - abar) * std::sqrt(2.0 / n)) << t;
    const auto mv = d.qMeanVariance(x0.slice(0, 0, 2), at::full({2}, t, torch::kLong));
    EXPECT_NEAR(mv.first[0][0].item<double>(), std::sqrt(abar) * 0.7, 1e-15);
    EXPECT_NEAR(mv.second[0][0].item<double>(), 1 - abar, 1e-15);
  }
  // Per-sample timesteps broadcast over the image dimensions; float data keeps its dtype.
  const at::Tensor img = torch::ones({2, 3, 4, 4});
  const at::Tensor out = d.qSample(img, torch::tensor({0, 999}), torch::zeros({2, 3, 4, 4}));
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_NEAR(out[0].mean().item<double>(), std::sqrt(d.alphaCumprod(0)), 1e-6);
  EXPECT_NEAR(out[1].mean().item<double>(), std::sqrt(d.alphaCumprod(999)), 1e-6);
}

TEST(Diffusion, ObjectiveConversionsAreConsistent) {
  GaussianDiffusion d(DiffusionOptions{});
  const at::Tensor x0 = torch::rand({5, 2, 3, 3}, torch::kDouble) * 2 - 1;
  const at::Tensor eps = torch::randn({5, 2, 3, 3}, torch::kDouble);
  const at::Tensor t = torch::tensor({0, 1, 300, 900, 999});
  const at::Tensor xt = d.qSample(x0, t, eps);
  const at::Tensor v = d.vFromX0Eps(x0, eps, t);
  EXPECT_TRUE(torch::allclose(d.x0FromEps(xt, t, eps), x0, 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(d.epsFromX0(xt, t, x0), eps, 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(d.x0FromV(xt, t, v), x0, 1e-9, 1e-9));
  EXPECT_TRUE(torch::allclose(d.epsFromV(xt, t, v), eps, 1e-9, 1e-9));
  // v = sqrt(abar) eps - sqrt(1 - abar) x0, at one sample.
  const double a = std::sqrt(d.alphaCumprod(300)), s = std::sqrt(1 - d.alphaCumprod(300));
  EXPECT_TRUE(torch::allclose(v[2], a * eps[2] - s * x0[2], 1e-12, 1e-12));
  // Whatever the network predicts, its target converts back to x0 and eps.
  for (Prediction p : {Prediction::kEps, Prediction::kX0, Prediction::kV}) {
    DiffusionOptions o;
    o.prediction = p;
    GaussianDiffusion dp(o);
    const at::Tensor target = dp.target(x0, eps, t);
    EXPECT_TRUE(torch::allclose(dp.predictX0(xt, t, target), x0, 1e-9, 1e-9)) << toString(p);
    EXPECT_TRUE(torch::allclose(dp.predictEps(xt, t, target), eps, 1e-9, 1e-9)) << toString(p);
  }
}

// Two timesteps with known SNRs: abar_0 = 0.99 (SNR 99), abar_1 = 0.99 * 0.5 (SNR 0.495 / 0.505).
DiffusionOptions knownSnr(Prediction p, LossWeighting w) {
  DiffusionOptions o;
  o.timesteps = 2;
  o.beta_start = 0.01;
  o.beta_end = 0.5;
  o.prediction = p;
  o.weighting = w;
  o.min_snr_gamma = 5;
  return o;
}

TEST(Diffusion, MinSnrWeightsAtKnownSnrs) {
  const double snr1 = 0.495 / 0.505;
  const at::Tensor t = torch::tensor({0, 1});
  {
    GaussianDiffusion d(knownSnr(Prediction::kEps, LossWeighting::kMinSnr));
    EXPECT_NEAR(at1(d.snr(), 0), 99.0, 1e-12);
    EXPECT_NEAR(at1(d.snr(), 1), snr1, 1e-12);
    const at::Tensor w = d.lossWeights(t);
    EXPECT_NEAR(w[0].item<double>(), 5.0 / 99.0, 1e-7);
    EXPECT_NEAR(w[1].item<double>(), 1.0, 1e-7);
  }
  {
    GaussianDiffusion d(knownSnr(Prediction::kX0, LossWeighting::kMinSnr));
    const at::Tensor w = d.lossWeights(t);
    EXPECT_NEAR(w[0].item<double>(), 5.0, 1e-6);
    EXPECT_NEAR(w[1].item<double>(), snr1, 1e-7);
  }
  {
    GaussianDiffusion d(knownSnr(Prediction::kV, LossWeighting::kMinSnr));
    const at::Tensor w = d.lossWeights(t);
    EXPECT_NEAR(w[0].item<double>(), 5.0 / 100.0, 1e-7);
    EXPECT_NEAR(w[1].item<double>(), snr1 / (snr1 + 1), 1e-7);
  }
  GaussianDiffusion uniform(knownSnr(Prediction::kEps, LossWeighting::kUniform));
  EXPECT_TRUE(torch::equal(uniform.lossWeights(t), torch::ones({2})));
}

// Min-SNR-gamma is one objective, min(SNR, gamma) |x0_hat - x0|^2, whatever the network predicts.
TEST(Diffusion, MinSnrLossIsTheSameObjectiveForEveryPrediction) {
  DiffusionOptions base;
  base.weighting = LossWeighting::kMinSnr;
  const at::Tensor x0 = torch::rand({4, 1, 4, 4}, torch::kDouble) * 2 - 1;
  const at::Tensor eps = torch::randn({4, 1, 4, 4}, torch::kDouble);
  const at::Tensor x0_hat = x0 + 0.1 * torch::randn({4, 1, 4, 4}, torch::kDouble);
  const at::Tensor t = torch::tensor({0, 10, 400, 999});
  GaussianDiffusion ref(base);
  const at::Tensor xt = ref.qSample(x0, t, eps);
  const at::Tensor expected =
      (x0_hat - x0).pow(2).reshape({4, -1}).mean(1) * ref.snr().index_select(0, t).clamp_max(5.0);
  for (Prediction p : {Prediction::kEps, Prediction::kX0, Prediction::kV}) {
    DiffusionOptions o = base;
    o.prediction = p;
    GaussianDiffusion d(o);
    at::Tensor output;
    if (p == Prediction::kEps) output = d.epsFromX0(xt, t, x0_hat);
    if (p == Prediction::kX0) output = x0_hat;
    if (p == Prediction::kV) output = d.vFromX0Eps(x0_hat, d.epsFromX0(xt, t, x0_hat), t);
    const DiffusionLoss l = d.loss(output, x0, eps, t);
    EXPECT_TRUE(torch::allclose(l.per_sample.to(torch::kDouble), expected, 1e-4, 1e-6))
        << toString(p) << "\n"
        << l.per_sample << "\n"
        << expected;
  }
}

TEST(Diffusion, LossWithImportanceWeights) {
  GaussianDiffusion d(DiffusionOptions{});
  const at::Tensor x0 = torch::zeros({3, 1, 2, 2});
  const at::Tensor noise = torch::ones({3, 1, 2, 2});
  const at::Tensor out = torch::zeros({3, 1, 2, 2});
  out[1].fill_(3.0);
  const at::Tensor t = torch::tensor({1, 2, 3});
  const DiffusionLoss plain = d.loss(out, x0, noise, t);
  EXPECT_TRUE(torch::allclose(plain.per_sample, torch::tensor({1.0f, 4.0f, 1.0f})));
  EXPECT_NEAR(plain.loss.item<double>(), 2.0, 1e-6);
  const DiffusionLoss weighted = d.loss(out, x0, noise, t, torch::tensor({0.5, 2.0, 1.0}));
  EXPECT_NEAR(weighted.loss.item<double>(), (0.5 + 8.0 + 1.0) / 3, 1e-6);
  EXPECT_TRUE(torch::equal(weighted.per_sample, plain.per_sample));
}

TEST(FlowMatching, InterpolationAndVelocity) {
  FlowMatching flow;
  const at::Tensor x0 = torch::randn({3, 2, 2}, torch::kDouble);
  const at::Tensor eps = torch::randn({3, 2, 2}, torch::kDouble);
  const at::Tensor t = torch::tensor({0.0, 0.25, 1.0}, torch::kDouble);
  const at::Tensor xt = flow.interpolate(x0, eps, t);
  EXPECT_TRUE(torch::allclose(xt[0], x0[0]));
  EXPECT_TRUE(torch::allclose(xt[1], 0.75 * x0[1] + 0.25 * eps[1]));
  EXPECT_TRUE(torch::allclose(xt[2], eps[2]));
  const at::Tensor v = flow.velocityTarget(x0, eps);
  // The target is the time derivative of the path.
  const double h = 1e-6;
  const at::Tensor dt = (flow.interpolate(x0, eps, t + h) - flow.interpolate(x0, eps, t)) / h;
  EXPECT_TRUE(torch::allclose(dt, v, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(flow.x0FromVelocity(xt, t, v), x0));
  EXPECT_TRUE(torch::allclose(flow.epsFromVelocity(xt, t, v), eps));
  EXPECT_TRUE(torch::allclose(flow.modelTime(t), torch::tensor({0.0f, 250.0f, 1000.0f})));
  const DiffusionLoss l =
      flow.loss(v.to(torch::kFloat), x0.to(torch::kFloat), eps.to(torch::kFloat));
  EXPECT_NEAR(l.loss.item<double>(), 0.0, 1e-12);
}

TEST(Diffusion, KeyedNormalDependsOnSampleIndexOnly) {
  const auto opts = torch::TensorOptions().dtype(torch::kFloat);
  const at::Tensor all = keyedNormal({2, 3}, 0, 6, 11, 4, NoiseStream::kTraining, opts);
  const at::Tensor tail = keyedNormal({2, 3}, 4, 2, 11, 4, NoiseStream::kTraining, opts);
  EXPECT_EQ(all.sizes(), (std::vector<std::int64_t>{6, 2, 3}));
  EXPECT_TRUE(torch::equal(all.slice(0, 4), tail));
  EXPECT_FALSE(torch::equal(all, keyedNormal({2, 3}, 0, 6, 11, 5, NoiseStream::kTraining, opts)));
  EXPECT_FALSE(torch::equal(all, keyedNormal({2, 3}, 0, 6, 11, 4, NoiseStream::kSampling, opts)));
  EXPECT_FALSE(torch::equal(all, keyedNormal({2, 3}, 0, 6, 12, 4, NoiseStream::kTraining, opts)));
  const at::Tensor big = keyedNormal({1000}, 0, 100, 1, 0, NoiseStream::kTraining, opts);
  EXPECT_NEAR(big.mean().item<double>(), 0.0, 0.02);
  EXPECT_NEAR(big.std().item<double>(), 1.0, 0.02);
}

TEST(Diffusion, KeyedLabelDropout) {
  const at::Tensor labels = torch::arange(20000) % 10;
  const at::Tensor dropped = keyedLabelDropout(labels, 0.1, 10, 3, 7, 100);
  const double rate = dropped.eq(10).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(rate, 0.1, 0.01);
  EXPECT_TRUE(torch::equal(dropped.ne(10), dropped.eq(labels)));
  // Sample i's decision depends on its global index only.
  EXPECT_TRUE(torch::equal(dropped.slice(0, 50),
                           keyedLabelDropout(labels.slice(0, 50), 0.1, 10, 3, 7, 150)));
  EXPECT_TRUE(torch::equal(keyedLabelDropout(labels, 0.0, 10, 3, 7, 0), labels));
}

}  // namespace
}  // namespace tessera::models
