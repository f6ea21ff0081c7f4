// Diffusion processes for training and sampling image models, written from the papers:
//
// - GaussianDiffusion: the discrete-time process of Ho et al. 2020 (DDPM) with T steps,
//   q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), abar_t = prod_{s<=t} (1 - beta_s); beta
//   schedules linear (Ho et al.: 1e-4 ... 0.02) or cosine (Nichol & Dhariwal 2021, betas clipped
//   at 0.999); the posterior q(x_{t-1} | x_t, x_0); the model predicts eps, x_0 or
//   v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022), with conversions between the
//   three; the loss is a per-sample MSE on the predicted quantity, weighted uniformly or by
//   min-SNR-gamma (Hang et al. 2023).
// - FlowMatching: the linear interpolation x_t = (1 - t) x_0 + t eps, t in [0, 1], trained as flow
//   matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) with the velocity target
//   dx_t/dt = eps - x_0.
//
// Timestep indices are 0-based: t = 0 is the first noising step (abar_0 = 1 - beta_0) and
// t = T - 1 the last. Schedules are computed in double on the CPU; per-sample coefficients are
// gathered onto the data's device and cast to its dtype.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::models {

enum class BetaSchedule { kLinear, kCosine };
// What the network predicts: the noise, the clean image, or the velocity v of Salimans & Ho.
enum class Prediction { kEps, kX0, kV };
enum class LossWeighting { kUniform, kMinSnr };

struct DiffusionOptions {
  std::int64_t timesteps = 1000;  // T
  BetaSchedule schedule = BetaSchedule::kLinear;
  double beta_start = 1e-4;  // linear schedule: beta_0 ... beta_{T-1} evenly spaced
  double beta_end = 0.02;
  double cosine_offset = 0.008;  // cosine schedule: s in f(t) = cos^2((t/T + s) / (1 + s) pi/2)
  double max_beta = 0.999;       // cosine schedule: betas clipped here
  Prediction prediction = Prediction::kEps;
  LossWeighting weighting = LossWeighting::kUniform;
  double min_snr_gamma = 5.0;
};

// Per-sample losses of one batch.
struct DiffusionLoss {
  at::Tensor per_sample;  // [B]: weighted MSE (weighting applied, importance weights not)
  at::Tensor loss;        // scalar: mean over the batch of importance weight x per_sample
};

// Names for parsing configurations and reporting.
std::string toString(BetaSchedule schedule);
std::string toString(Prediction prediction);
std::string toString(LossWeighting weighting);

class GaussianDiffusion {
 public:
  explicit GaussianDiffusion(const DiffusionOptions& options);

  const DiffusionOptions& options() const { return options_; }
  std::int64_t timesteps() const { return options_.timesteps; }

  // Tables over t = 0 .. T-1, double, CPU.
  const at::Tensor& betas() const { return betas_; }
  const at::Tensor& alphasCumprod() const { return alphas_cumprod_; }  // abar_t
  const at::Tensor& alphasCumprodPrev() const {
    return alphas_cumprod_prev_;
  }  // abar_{t-1}, 1 at t=0
  const at::Tensor& posteriorVariance() const { return posterior_variance_; }
  // log of the posterior variance with its t = 0 value (0) replaced by the t = 1 value.
  const at::Tensor& posteriorLogVarianceClipped() const { return posterior_log_variance_; }
  const at::Tensor& posteriorMeanCoef1() const { return posterior_mean_coef1_; }  // of x_0
  const at::Tensor& posteriorMeanCoef2() const { return posterior_mean_coef2_; }  // of x_t
  // Signal-to-noise ratio abar_t / (1 - abar_t).
  const at::Tensor& snr() const { return snr_; }

  // Scalars of one timestep (host, double).
  double alphaCumprod(std::int64_t t) const;

  // q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise. t: integer [B] on x0's device.
  at::Tensor qSample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const;
  // Mean and variance of q(x_t | x_0), the variance broadcastable to x0.
  std::pair<at::Tensor, at::Tensor> qMeanVariance(const at::Tensor& x0, const at::Tensor& t) const;
  // q(x_{t-1} | x_t, x_0): mean, variance and clipped log-variance (the last two [B, 1, ...]).
  struct Posterior {
    at::Tensor mean, variance, log_variance;
  };
  Posterior posterior(const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& t) const;

  // Conversions between what a network may predict, given x_t and t.
  at::Tensor x0FromEps(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& eps) const;
  at::Tensor epsFromX0(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& x0) const;
  at::Tensor vFromX0Eps(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t) const;
  at::Tensor x0FromV(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& v) const;
  at::Tensor epsFromV(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& v) const;
  // x_0 and eps implied by a network output of this process's prediction type.
  at::Tensor predictX0(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& output) const;
  at::Tensor predictEps(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& output) const;

  // The training target of the prediction type for x_0 and the noise that made x_t.
  at::Tensor target(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;
  // Per-sample loss weights [B] (float, on t's device): 1, or min-SNR-gamma in the form of the
  // prediction type: min(SNR, g) / SNR for eps, min(SNR, g) for x_0, min(SNR, g) / (SNR + 1)
  // for v (each equals min(SNR, g) times the x_0-MSE the loss is in effect).
  at::Tensor lossWeights(const at::Tensor& t) const;
  // Weighted MSE of `output` against target(x0, noise, t), per sample and averaged with
  // `importance` ([B], optional: ones) over the batch.
  DiffusionLoss loss(const at::Tensor& output, const at::Tensor& x0, const at::Tensor& noise,
                     const at::Tensor& t, const at::Tensor& importance = at::Tensor()) const;

  // table[t] on like's device and dtype, shaped [B, 1, ...] to broadcast against `like`.
  at::Tensor gather(const at::Tensor& table, const at::Tensor& t, const at::Tensor& like) const;

 private:
  at::Tensor onDevice(const at::Tensor& table, c10::Device device) const;
  struct DeviceCache;

  DiffusionOptions options_;
  at::Tensor betas_, alphas_cumprod_, alphas_cumprod_prev_, sqrt_alphas_cumprod_,
      sqrt_one_minus_alphas_cumprod_, posterior_variance_, posterior_log_variance_,
      posterior_mean_coef1_, posterior_mean_coef2_, snr_;
  std::vector<double> abar_host_;
  std::shared_ptr<DeviceCache> cache_;  // tables copied to other devices, shared by copies
};

// The beta schedules on their own (double, CPU, [T]).
at::Tensor linearBetas(std::int64_t timesteps, double beta_start, double beta_end);
at::Tensor cosineBetas(std::int64_t timesteps, double offset = 0.008, double max_beta = 0.999);

enum class FlowTimeDistribution { kUniform, kLogitNormal };

struct FlowMatchingOptions {
  // The network sees time_scale * t (the discrete process's range for the same embedding).
  double time_scale = 1000.0;
  // How training draws t (models/timestep_sampler.h maps keyed uniforms through it).
  FlowTimeDistribution time_distribution = FlowTimeDistribution::kUniform;
  double logit_mean = 0.0;  // logit-normal: t = sigmoid(m + s n), n ~ N(0, 1)
  double logit_std = 1.0;
};

std::string toString(FlowTimeDistribution distribution);

class FlowMatching {
 public:
  explicit FlowMatching(const FlowMatchingOptions& options = {}) : options_(options) {}
  const FlowMatchingOptions& options() const { return options_; }

  // (1 - t) x0 + t noise, t: [B] floating on x0's device.
  at::Tensor interpolate(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;
  // dx_t/dt = noise - x0.
  at::Tensor velocityTarget(const at::Tensor& x0, const at::Tensor& noise) const;
  // x_0 and noise implied by a velocity at (x_t, t).
  at::Tensor x0FromVelocity(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& v) const;
  at::Tensor epsFromVelocity(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& v) const;
  // What the network is given as its time input: time_scale * t.
  at::Tensor modelTime(const at::Tensor& t) const;
  // Per-sample MSE of the velocity and its batch mean with optional importance weights.
  DiffusionLoss loss(const at::Tensor& output, const at::Tensor& x0, const at::Tensor& noise,
                     const at::Tensor& importance = at::Tensor()) const;

 private:
  FlowMatchingOptions options_;
};

// Keyed noise streams: which `stream` coordinate each use of RngPurpose::kNoise takes.
enum class NoiseStream : std::uint64_t { kTraining = 0, kSampling = 1 };

// Standard normal noise [count, sample_shape...] for global samples first .. first + count - 1:
// sample i's values come from a generator keyed by (seed, kNoise, a, first + i, stream) on
// `options`' device, so they do not depend on which rank draws them, nor on the batch.
// Training uses a = step; samplers use a = their stage.
at::Tensor keyedNormal(at::IntArrayRef sample_shape, std::int64_t first, std::int64_t count,
                       std::uint64_t seed, std::uint64_t a, NoiseStream stream,
                       const at::TensorOptions& options);

// Label dropout for classifier-free guidance: each global sample first + i keeps its label with
// probability 1 - p, else gets `null_label`; decided by a keyed draw (seed, kDropout, step,
// first + i, 1), independent of the world size. labels: int64 [B] on any device.
at::Tensor keyedLabelDropout(const at::Tensor& labels, double p, std::int64_t null_label,
                             std::uint64_t seed, std::int64_t step, std::int64_t first);

}  // namespace tessera::models
