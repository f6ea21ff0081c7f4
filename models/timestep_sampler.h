// Timestep draws for diffusion training that do not depend on the number of ranks.
//
// Every draw is keyed by (seed, step, global sample index): a step's global batch of G samples
// is drawn as one process with batch G would draw it, and rank r computes only its slice
// [begin, end) (e.g. [r B, (r + 1) B) for per-rank batch B). Three kinds:
//
// - uniform: t = floor(u T), u keyed per sample;
// - stratified: [0, 1) is cut into G equal strata, a keyed permutation of (seed, step) assigns
//   stratum pi(i) to sample i, and u = (pi(i) + v_i) / G with v_i keyed per sample. The global
//   batch covers every stratum exactly once per step (when G divides T, every block of T / G
//   timesteps gets exactly one draw); each t is still marginally uniform;
// - loss-aware importance sampling (the second-moment resampler of Nichol & Dhariwal 2021):
//   per timestep, the history of the last k squared losses; p_t proportional to sqrt(E[L^2]),
//   mixed with the uniform distribution (probability uniform_mix); uniform until every timestep
//   has k entries; samples weighted by 1 / (T p_t) so the loss stays unbiased. t is the inverse
//   CDF of p at the sample's u (stratified or not). The history is updated from ONE all-reduce
//   per step of per-timestep sums (loss, squared loss) and counts through a StatsReducer: every
//   rank applies the same global statistics, so p is the same on every rank. Within a step the
//   c_t losses at timestep t enter the history as c_t copies of their mean square (the sum of
//   squares, hence the window's second moment, is unchanged whenever the whole step is inside).
//
// ContinuousTimeSampler gives t in [0, 1) the same way (uniform or stratified), mapped through the
// flow-matching time distribution (uniform, or logit-normal by its inverse CDF).
//
// Draws use RngPurpose::kTimestep: per-sample uniforms (seed, kTimestep, step, i, 0), the strata
// permutation (seed, kTimestep, step, 0, 1).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "models/diffusion.h"

namespace tessera::models {

class StatsReducer;

enum class TimestepSampling { kUniform, kStratified, kLossAware };
std::string toString(TimestepSampling sampling);

struct TimestepSamplerOptions {
  TimestepSampling kind = TimestepSampling::kUniform;
  std::int64_t timesteps = 1000;  // T
  std::uint64_t seed = 0;
  // Loss-aware sampling.
  std::int64_t history = 10;  // k: squared losses kept per timestep
  double uniform_mix = 0.001;
  bool stratified = true;  // invert the CDF at stratified (true) or independent uniforms
};

// This rank's draws for one step.
struct TimestepDraw {
  at::Tensor t;        // int64 [end - begin], CPU
  at::Tensor weights;  // float [end - begin], CPU: importance weights (ones unless loss-aware)
};

// The keyed uniforms in [0, 1) of global samples [begin, end) of a step's global batch of
// `global_batch` (double, CPU); stratified as described above when `stratified`.
at::Tensor keyedUniforms(std::uint64_t seed, std::int64_t step, std::int64_t global_batch,
                         std::int64_t begin, std::int64_t end, bool stratified);

class TimestepSampler {
 public:
  explicit TimestepSampler(const TimestepSamplerOptions& options);

  const TimestepSamplerOptions& options() const { return options_; }

  // Timesteps and importance weights of global samples [begin, end) of `step` (0 <= begin <=
  // end <= global_batch). The same on any rank for the same arguments and state.
  TimestepDraw draw(std::int64_t step, std::int64_t global_batch, std::int64_t begin,
                    std::int64_t end) const;

  // The sampling distribution p [T] (double, CPU): uniform unless loss-aware and warmed up.
  at::Tensor probabilities() const;
  // Loss-aware: whether every timestep has `history` entries (always true otherwise).
  bool warmedUp() const;

  // Collective: every rank calls it once per step, whatever the kind, with its slice's draws.
  // Folds this rank's per-sample losses (float [n], any device: DiffusionLoss::per_sample, the
  // objective's weighting applied but not the importance weights) at
  // timesteps t (int64 [n]) into the statistics with one reducer.sumInPlace of a [3, T] double
  // tensor on the losses' device; the losses are read to the host first (one device sync). The
  // history changes only when loss-aware; lastMeanLoss() is kept for every kind.
  void update(const at::Tensor& t, const at::Tensor& losses, StatsReducer& reducer);

  // update() in two halves, for callers that reduce themselves (or simulate ranks): this rank's
  // [3, T] double statistics (sum of L, sum of L^2, count per timestep), and the folding of the
  // statistics summed over every rank.
  at::Tensor localStatistics(const at::Tensor& t, const at::Tensor& losses) const;
  void applyGlobalStatistics(const at::Tensor& summed);

  // The last step's global per-timestep mean loss [T] (double, CPU; NaN where no sample fell),
  // for metrics such as the loss by timestep quartile. Undefined before the first update.
  const at::Tensor& lastMeanLoss() const { return last_mean_loss_; }
  // max(p) / min(p) of the current distribution (1 when uniform).
  double weightSpread() const;

  // The loss-aware history as named tensors ("<prefix>history" [T, k] double, "<prefix>filled"
  // [T] int64, "<prefix>next" [T] int64), and back. A state saved with another T or k is an
  // error.
  std::vector<std::pair<std::string, at::Tensor>> state(const std::string& prefix = "") const;
  void loadState(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix = "");

 private:
  void recomputeProbabilities();

  TimestepSamplerOptions options_;
  at::Tensor history_;  // [T, k] squared losses (ring per timestep)
  at::Tensor filled_;   // [T] entries in the ring, <= k
  at::Tensor next_;     // [T] next ring position
  at::Tensor probs_;    // [T]
  std::vector<double> cdf_;
  at::Tensor last_mean_loss_;
};

struct ContinuousTimeOptions {
  std::uint64_t seed = 0;
  bool stratified = true;
  FlowTimeDistribution distribution = FlowTimeDistribution::kUniform;
  double logit_mean = 0.0;
  double logit_std = 1.0;
};

// t in [0, 1] for flow matching: keyedUniforms mapped through the time distribution (the
// logit-normal by its inverse CDF, t = sigmoid(m + s sqrt(2) erfinv(2u - 1)), which keeps the
// stratification). double [end - begin], CPU.
at::Tensor drawContinuousTimes(const ContinuousTimeOptions& options, std::int64_t step,
                               std::int64_t global_batch, std::int64_t begin, std::int64_t end);

}  // namespace tessera::models
