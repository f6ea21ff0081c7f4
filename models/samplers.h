// Samplers over a model callable, written from the papers:
//
// - ancestral: DDPM's reverse process (Ho et al. 2020), x_{t-1} ~ q(x_{t-1} | x_t, x0_hat), on the
//   full chain or on a respaced subsequence (Nichol & Dhariwal 2021: betas of the subsequence
//   from its abar), variance the posterior's or, optionally, beta;
// - DDIM (Song et al. 2021): x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2)
//   eps_hat + sigma z, sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev);
//   eta = 0 is deterministic;
// - DPM-Solver++(2M) (Lu et al. 2022): the multistep second-order solver in the data prediction,
//   with half log-SNR lambda = log(alpha / sigma); first order on its first step and on the step
//   into the last timestep (the largest step in lambda, where the second-order extrapolation
//   overshoots), and the last step goes to the clean image (x = x0_hat);
// - Euler and Heun for the linear-interpolation process (flow matching): dx/dt = v(x, t) from
//   t = 1 (noise) to t = 0 on a uniform grid; Heun's last step (to t = 0) is an Euler step.
//
// Gaussian samplers visit `steps` timesteps respacedTimesteps(T, steps) (T - 1 ... 0) with one
// model evaluation each; Euler takes `steps` evaluations, Heun 2 steps - 1.
//
// Noise is keyed by global sample index: samples [first, first + count) start from
// keyedNormal(shape, first, count, seed, 0, NoiseStream::kSampling) and stage s >= 1 of a
// stochastic sampler adds keyedNormal(..., s, ...), so a sample's image depends on (seed, its
// index), not on how many ranks draw the set or how it is batched.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/diffusion.h"

namespace tessera::models {

enum class SamplerKind { kAncestral, kDdim, kDpmSolver2M, kEuler, kHeun };
std::string toString(SamplerKind kind);
// Whether the sampler is for the Gaussian process (true) or the interpolation process (false).
bool isGaussianSampler(SamplerKind kind);

// The model: x [B, ...] and the time input t (float [B], x's device) -> its raw prediction (of
// the process's prediction type; the velocity for flow matching). t is the timestep index for
// GaussianDiffusion and FlowMatching::modelTime(t) for flow matching.
using DenoiserFn = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t)>;
// The same with class labels (int64 [B]).
using LabeledDenoiserFn =
    std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels)>;

// Classifier-free guidance (Ho & Salimans 2021): uncond + scale (cond - uncond), the
// unconditional prediction taken with every label `null_label`, both in one batch of 2B. Scale 1
// is the conditional model alone (one evaluation), 0 the unconditional one. `labels` are those of
// the samples the returned callable will be called on (int64 [B]).
DenoiserFn classifierFreeGuidance(LabeledDenoiserFn model, at::Tensor labels,
                                  std::int64_t null_label, double scale);

struct SamplerOptions {
  SamplerKind kind = SamplerKind::kDdim;
  std::int64_t steps = 50;  // respaced step count (ancestral: T for the full chain)
  double eta = 0.0;         // DDIM
  bool clip_x0 = true;      // Gaussian samplers: clip x0_hat to [-1, 1] (eps_hat follows it)
  bool ancestral_beta_variance = false;  // ancestral: beta instead of the posterior variance
  std::uint64_t seed = 0;
};

// `steps` distinct timesteps, increasing, from 0 to T - 1 (evenly spaced, rounded); {T - 1} for
// one step.
std::vector<std::int64_t> respacedTimesteps(std::int64_t timesteps, std::int64_t steps);

// Samples [first, first + count) of shape [count, sample_shape...] with the Gaussian process,
// computed without gradients on `options`' device.
at::Tensor sampleDiffusion(const GaussianDiffusion& diffusion, const DenoiserFn& model,
                           const SamplerOptions& sampler, at::IntArrayRef sample_shape,
                           std::int64_t first, std::int64_t count,
                           const at::TensorOptions& options);

// The same for the interpolation process (kEuler or kHeun).
at::Tensor sampleFlow(const FlowMatching& flow, const DenoiserFn& model,
                      const SamplerOptions& sampler, at::IntArrayRef sample_shape,
                      std::int64_t first, std::int64_t count, const at::TensorOptions& options);

}  // namespace tessera::models
