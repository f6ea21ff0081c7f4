#include "models/timestep_sampler.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/keyed_rng.h"
#include "models/stats_reducer.h"

namespace tessera::models {
namespace {

// Global sample i's stratum (i itself when not stratified) and its keyed uniform v in [0, 1).
struct UnitDraw {
  std::int64_t stratum;
  double v;
};

std::vector<UnitDraw> unitDraws(std::uint64_t seed, std::int64_t step, std::int64_t global_batch,
                                std::int64_t begin, std::int64_t end, bool stratified) {
  TORCH_CHECK(global_batch >= 1 && begin >= 0 && begin <= end && end <= global_batch,
              "timestep draw: slice [", begin, ", ", end, ") is not inside a global batch of ",
              global_batch);
  TORCH_CHECK(step >= 0, "timestep draw: step must be >= 0");
  std::vector<std::int64_t> perm;
  if (stratified) {
    perm = keyedPermutation(
        global_batch, rngKey(seed, RngPurpose::kTimestep, static_cast<std::uint64_t>(step), 0, 1));
  }
  std::vector<UnitDraw> out;
  out.reserve(static_cast<std::size_t>(end - begin));
  for (std::int64_t i = begin; i < end; ++i) {
    KeyedStream stream(rngKey(seed, RngPurpose::kTimestep, static_cast<std::uint64_t>(step),
                              static_cast<std::uint64_t>(i), 0));
    out.push_back({stratified ? perm[static_cast<std::size_t>(i)] : i, stream.uniform()});
  }
  return out;
}

double unitValue(const UnitDraw& d, std::int64_t global_batch, bool stratified) {
  if (!stratified) return d.v;
  const double u = (static_cast<double>(d.stratum) + d.v) / static_cast<double>(global_batch);
  return std::min(u, std::nextafter(1.0, 0.0));
}

}  // namespace

std::string toString(TimestepSampling sampling) {
  switch (sampling) {
    case TimestepSampling::kUniform:
      return "uniform";
    case TimestepSampling::kStratified:
      return "stratified";
    case TimestepSampling::kLossAware:
      return "loss_aware";
  }
  return "?";
}

at::Tensor keyedUniforms(std::uint64_t seed, std::int64_t step, std::int64_t global_batch,
                         std::int64_t begin, std::int64_t end, bool stratified) {
  const auto draws = unitDraws(seed, step, global_batch, begin, end, stratified);
  at::Tensor u = at::empty({end - begin}, at::kDouble);
  auto a = u.accessor<double, 1>();
  for (std::size_t i = 0; i < draws.size(); ++i) {
    a[static_cast<std::int64_t>(i)] = unitValue(draws[i], global_batch, stratified);
  }
  return u;
}

TimestepSampler::TimestepSampler(const TimestepSamplerOptions& o) : options_(o) {
  TORCH_CHECK(o.timesteps >= 1, "TimestepSampler: timesteps must be >= 1");
  TORCH_CHECK(o.history >= 1, "TimestepSampler: history must be >= 1");
  TORCH_CHECK(o.uniform_mix >= 0 && o.uniform_mix <= 1,
              "TimestepSampler: uniform_mix must be in [0, 1]");
  history_ = at::zeros({o.timesteps, o.history}, at::kDouble);
  filled_ = at::zeros({o.timesteps}, at::kLong);
  next_ = at::zeros({o.timesteps}, at::kLong);
  recomputeProbabilities();
}

bool TimestepSampler::warmedUp() const {
  if (options_.kind != TimestepSampling::kLossAware) return true;
  return filled_.min().item<std::int64_t>() >= options_.history;
}

void TimestepSampler::recomputeProbabilities() {
  const std::int64_t n = options_.timesteps;
  probs_ = at::full({n}, 1.0 / static_cast<double>(n), at::kDouble);
  if (options_.kind == TimestepSampling::kLossAware && warmedUp()) {
    const at::Tensor w = history_.mean(1).sqrt();  // sqrt(E[L^2]) per timestep
    const double total = w.sum().item<double>();
    if (total > 0 && std::isfinite(total)) {
      probs_ =
          w / total * (1.0 - options_.uniform_mix) + options_.uniform_mix / static_cast<double>(n);
    }
  }
  cdf_.assign(static_cast<std::size_t>(n), 0.0);
  const auto p = probs_.accessor<double, 1>();
  double acc = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    acc += p[i];
    cdf_[static_cast<std::size_t>(i)] = acc;
  }
  cdf_.back() = std::numeric_limits<double>::infinity();  // every u in [0, 1) lands somewhere
}

at::Tensor TimestepSampler::probabilities() const {
  return probs_;
}

double TimestepSampler::weightSpread() const {
  return probs_.max().item<double>() / probs_.min().item<double>();
}

TimestepDraw TimestepSampler::draw(std::int64_t step, std::int64_t global_batch, std::int64_t begin,
                                   std::int64_t end) const {
  const std::int64_t n = options_.timesteps;
  const bool loss_aware = options_.kind == TimestepSampling::kLossAware;
  const bool stratified =
      options_.kind == TimestepSampling::kStratified || (loss_aware && options_.stratified);
  const auto draws = unitDraws(options_.seed, step, global_batch, begin, end, stratified);
  TimestepDraw out;
  out.t = at::empty({end - begin}, at::kLong);
  out.weights = at::ones({end - begin}, at::kFloat);
  auto t = out.t.accessor<std::int64_t, 1>();
  auto w = out.weights.accessor<float, 1>();
  const auto p = probs_.accessor<double, 1>();
  const bool uniform_p = !loss_aware || !warmedUp();
  for (std::size_t i = 0; i < draws.size(); ++i) {
    const auto k = static_cast<std::int64_t>(i);
    const double u = unitValue(draws[i], global_batch, stratified);
    if (uniform_p) {
      auto value = static_cast<std::int64_t>(std::floor(u * static_cast<double>(n)));
      if (stratified) {
        // Inside the stratum's timesteps [floor(jT/G), ceil((j+1)T/G) - 1] whatever the
        // rounding of u * T.
        const std::int64_t j = draws[i].stratum;
        const std::int64_t lo = j * n / global_batch;
        const std::int64_t hi = ((j + 1) * n + global_batch - 1) / global_batch - 1;
        value = std::clamp(value, lo, hi);
      }
      t[k] = std::clamp<std::int64_t>(value, 0, n - 1);
    } else {
      const auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
      t[k] = std::min<std::int64_t>(it - cdf_.begin(), n - 1);
      w[k] = static_cast<float>(1.0 / (static_cast<double>(n) * p[t[k]]));
    }
  }
  return out;
}

at::Tensor TimestepSampler::localStatistics(const at::Tensor& t, const at::Tensor& losses) const {
  TORCH_CHECK(t.dim() == 1 && losses.dim() == 1 && t.size(0) == losses.size(0),
              "TimestepSampler: timesteps ", t.sizes(), " and losses ", losses.sizes(),
              " must be 1-d of one length");
  const at::Tensor tc = t.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor lc = losses.detach().to(at::kCPU, at::kDouble).contiguous();
  const std::int64_t n = options_.timesteps;
  at::Tensor stats = at::zeros({3, n}, at::kDouble);
  auto s = stats.accessor<double, 2>();
  const auto ta = tc.accessor<std::int64_t, 1>();
  const auto la = lc.accessor<double, 1>();
  for (std::int64_t i = 0; i < tc.size(0); ++i) {
    const std::int64_t k = ta[i];
    TORCH_CHECK(k >= 0 && k < n, "TimestepSampler: timestep ", k, " out of [0, ", n, ")");
    s[0][k] += la[i];
    s[1][k] += la[i] * la[i];
    s[2][k] += 1.0;
  }
  return stats;
}

void TimestepSampler::applyGlobalStatistics(const at::Tensor& summed) {
  const std::int64_t n = options_.timesteps, k = options_.history;
  TORCH_CHECK(summed.dim() == 2 && summed.size(0) == 3 && summed.size(1) == n,
              "TimestepSampler: statistics must be [3, ", n, "], got ", summed.sizes());
  const at::Tensor s = summed.to(at::kCPU, at::kDouble).contiguous();
  last_mean_loss_ = s[0] / s[2];  // 0 / 0 = NaN where no sample fell
  if (options_.kind != TimestepSampling::kLossAware) return;
  // Fresh tensors (copies of a sampler share them until one of them updates).
  history_ = history_.clone();
  filled_ = filled_.clone();
  next_ = next_.clone();
  const auto sa = s.accessor<double, 2>();
  auto h = history_.accessor<double, 2>();
  auto filled = filled_.accessor<std::int64_t, 1>();
  auto next = next_.accessor<std::int64_t, 1>();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto count = static_cast<std::int64_t>(std::llround(sa[2][i]));
    if (count <= 0) continue;
    const double mean_square = sa[1][i] / static_cast<double>(count);
    for (std::int64_t c = 0; c < std::min(count, k); ++c) {
      h[i][next[i]] = mean_square;
      next[i] = (next[i] + 1) % k;
      filled[i] = std::min(filled[i] + 1, k);
    }
  }
  recomputeProbabilities();
}

void TimestepSampler::update(const at::Tensor& t, const at::Tensor& losses, StatsReducer& reducer) {
  at::Tensor stats = localStatistics(t, losses).to(losses.device());
  reducer.sumInPlace(stats);
  applyGlobalStatistics(stats);
}

std::vector<std::pair<std::string, at::Tensor>> TimestepSampler::state(
    const std::string& prefix) const {
  return {{prefix + "history", history_.clone()},
          {prefix + "filled", filled_.clone()},
          {prefix + "next", next_.clone()}};
}

void TimestepSampler::loadState(const std::map<std::string, at::Tensor>& tensors,
                                const std::string& prefix) {
  const auto get = [&](const std::string& name, at::IntArrayRef shape, at::ScalarType dtype) {
    const auto it = tensors.find(prefix + name);
    TORCH_CHECK(it != tensors.end(), "timestep sampler state: missing '", prefix + name, "'");
    TORCH_CHECK(it->second.sizes() == shape, "timestep sampler state: '", prefix + name,
                "' has shape ", it->second.sizes(), ", expected ", shape);
    return it->second.to(at::kCPU, dtype).clone();
  };
  const std::int64_t n = options_.timesteps, k = options_.history;
  at::Tensor history = get("history", {n, k}, at::kDouble);
  at::Tensor filled = get("filled", {n}, at::kLong);
  at::Tensor next = get("next", {n}, at::kLong);
  TORCH_CHECK(filled.min().item<std::int64_t>() >= 0 && filled.max().item<std::int64_t>() <= k &&
                  next.min().item<std::int64_t>() >= 0 && next.max().item<std::int64_t>() < k,
              "timestep sampler state: ring positions out of range");
  history_ = history;
  filled_ = filled;
  next_ = next;
  recomputeProbabilities();
}

at::Tensor drawContinuousTimes(const ContinuousTimeOptions& o, std::int64_t step,
                               std::int64_t global_batch, std::int64_t begin, std::int64_t end) {
  const at::Tensor u = keyedUniforms(o.seed, step, global_batch, begin, end, o.stratified);
  if (o.distribution == FlowTimeDistribution::kUniform) return u;
  TORCH_CHECK(o.logit_std > 0, "logit-normal times: logit_std must be > 0");
  const at::Tensor normal = at::erfinv(u * 2.0 - 1.0) * std::sqrt(2.0);
  return at::sigmoid(normal * o.logit_std + o.logit_mean);
}

}  // namespace tessera::models
