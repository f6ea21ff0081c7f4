#include "models/diffusion.h"

#include <torch/torch.h>

#include <cmath>
#include <mutex>

#include "core/keyed_rng.h"

namespace tessera::models {

std::string toString(BetaSchedule schedule) {
  return schedule == BetaSchedule::kLinear ? "linear" : "cosine";
}

std::string toString(Prediction prediction) {
  switch (prediction) {
    case Prediction::kEps:
      return "eps";
    case Prediction::kX0:
      return "x0";
    case Prediction::kV:
      return "v";
  }
  return "?";
}

std::string toString(LossWeighting weighting) {
  return weighting == LossWeighting::kUniform ? "uniform" : "min_snr";
}

std::string toString(FlowTimeDistribution distribution) {
  return distribution == FlowTimeDistribution::kUniform ? "uniform" : "logit_normal";
}

at::Tensor linearBetas(std::int64_t timesteps, double beta_start, double beta_end) {
  TORCH_CHECK(timesteps >= 1, "linear betas: timesteps must be >= 1");
  TORCH_CHECK(beta_start > 0 && beta_end < 1 && beta_start <= beta_end,
              "linear betas: need 0 < beta_start <= beta_end < 1");
  at::Tensor betas = at::empty({timesteps}, at::kDouble);
  auto b = betas.accessor<double, 1>();
  for (std::int64_t i = 0; i < timesteps; ++i) {
    b[i] = timesteps == 1 ? beta_start
                          : beta_start + (beta_end - beta_start) * static_cast<double>(i) /
                                             static_cast<double>(timesteps - 1);
  }
  return betas;
}

at::Tensor cosineBetas(std::int64_t timesteps, double offset, double max_beta) {
  TORCH_CHECK(timesteps >= 1, "cosine betas: timesteps must be >= 1");
  TORCH_CHECK(offset >= 0 && max_beta > 0 && max_beta < 1, "cosine betas: bad offset or max_beta");
  // abar(u) = f(u) / f(0), f(u) = cos^2((u + s) / (1 + s) * pi / 2); beta_i = 1 -
  // abar(i+1)/abar(i).
  const auto f = [offset](double u) {
    const double c = std::cos((u + offset) / (1.0 + offset) * M_PI / 2.0);
    return c * c;
  };
  at::Tensor betas = at::empty({timesteps}, at::kDouble);
  auto b = betas.accessor<double, 1>();
  const double n = static_cast<double>(timesteps);
  for (std::int64_t i = 0; i < timesteps; ++i) {
    const double u0 = static_cast<double>(i) / n, u1 = static_cast<double>(i + 1) / n;
    b[i] = std::min(1.0 - f(u1) / f(u0), max_beta);
  }
  return betas;
}

struct GaussianDiffusion::DeviceCache {
  std::mutex mutex;
  std::map<std::pair<const void*, std::string>, at::Tensor> tables;
};

GaussianDiffusion::GaussianDiffusion(const DiffusionOptions& o)
    : options_(o), cache_(std::make_shared<DeviceCache>()) {
  TORCH_CHECK(o.timesteps >= 1, "GaussianDiffusion: timesteps must be >= 1");
  TORCH_CHECK(o.min_snr_gamma > 0, "GaussianDiffusion: min_snr_gamma must be > 0");
  betas_ = o.schedule == BetaSchedule::kLinear
               ? linearBetas(o.timesteps, o.beta_start, o.beta_end)
               : cosineBetas(o.timesteps, o.cosine_offset, o.max_beta);
  const std::int64_t n = o.timesteps;
  alphas_cumprod_ = at::empty({n}, at::kDouble);
  alphas_cumprod_prev_ = at::empty({n}, at::kDouble);
  auto beta = betas_.accessor<double, 1>();
  auto abar = alphas_cumprod_.accessor<double, 1>();
  auto abar_prev = alphas_cumprod_prev_.accessor<double, 1>();
  double prod = 1.0;
  for (std::int64_t i = 0; i < n; ++i) {
    abar_prev[i] = prod;
    prod *= 1.0 - beta[i];
    abar[i] = prod;
  }
  abar_host_.assign(alphas_cumprod_.data_ptr<double>(), alphas_cumprod_.data_ptr<double>() + n);
  sqrt_alphas_cumprod_ = alphas_cumprod_.sqrt();
  sqrt_one_minus_alphas_cumprod_ = (1.0 - alphas_cumprod_).sqrt();
  // q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_t (1 - abar_{t-1}) / (1 - abar_t)).
  const at::Tensor one_minus = 1.0 - alphas_cumprod_;
  posterior_variance_ = betas_ * (1.0 - alphas_cumprod_prev_) / one_minus;
  posterior_mean_coef1_ = betas_ * alphas_cumprod_prev_.sqrt() / one_minus;
  posterior_mean_coef2_ = (1.0 - alphas_cumprod_prev_) * (1.0 - betas_).sqrt() / one_minus;
  // The variance is 0 at t = 0: its log is clipped to the t = 1 value.
  posterior_log_variance_ = posterior_variance_.clone();
  if (n > 1) posterior_log_variance_[0] = posterior_variance_[1];
  posterior_log_variance_ = posterior_log_variance_.log();
  snr_ = alphas_cumprod_ / one_minus;
}

double GaussianDiffusion::alphaCumprod(std::int64_t t) const {
  TORCH_CHECK(t >= 0 && t < options_.timesteps, "timestep ", t, " out of [0, ", options_.timesteps,
              ")");
  return abar_host_[static_cast<std::size_t>(t)];
}

at::Tensor GaussianDiffusion::onDevice(const at::Tensor& table, c10::Device device) const {
  if (device.is_cpu()) return table;
  std::lock_guard<std::mutex> lock(cache_->mutex);
  at::Tensor& slot = cache_->tables[{table.unsafeGetTensorImpl(), device.str()}];
  if (!slot.defined()) slot = table.to(device);
  return slot;
}

at::Tensor GaussianDiffusion::gather(const at::Tensor& table, const at::Tensor& t,
                                     const at::Tensor& like) const {
  TORCH_CHECK(t.dim() == 1, "timesteps must be a 1-d tensor, got ", t.sizes());
  TORCH_CHECK(!at::isFloatingType(t.scalar_type()), "discrete timesteps must be integers");
  const at::Tensor idx = t.to(like.device(), at::kLong);
  at::Tensor values = onDevice(table, like.device()).index_select(0, idx);
  std::vector<std::int64_t> shape(static_cast<std::size_t>(std::max<std::int64_t>(like.dim(), 1)),
                                  1);
  shape[0] = t.size(0);
  return values.to(like.scalar_type()).view(shape);
}

at::Tensor GaussianDiffusion::qSample(const at::Tensor& x0, const at::Tensor& t,
                                      const at::Tensor& noise) const {
  return gather(sqrt_alphas_cumprod_, t, x0) * x0 +
         gather(sqrt_one_minus_alphas_cumprod_, t, x0) * noise;
}

std::pair<at::Tensor, at::Tensor> GaussianDiffusion::qMeanVariance(const at::Tensor& x0,
                                                                   const at::Tensor& t) const {
  return {gather(sqrt_alphas_cumprod_, t, x0) * x0, gather(1.0 - alphas_cumprod_, t, x0)};
}

GaussianDiffusion::Posterior GaussianDiffusion::posterior(const at::Tensor& x0,
                                                          const at::Tensor& xt,
                                                          const at::Tensor& t) const {
  Posterior p;
  p.mean = gather(posterior_mean_coef1_, t, xt) * x0 + gather(posterior_mean_coef2_, t, xt) * xt;
  p.variance = gather(posterior_variance_, t, xt);
  p.log_variance = gather(posterior_log_variance_, t, xt);
  return p;
}

// With a = sqrt(abar), s = sqrt(1 - abar), a^2 + s^2 = 1:
//   x_t = a x0 + s eps,  v = a eps - s x0,  x0 = a x_t - s v,  eps = s x_t + a v.
at::Tensor GaussianDiffusion::x0FromEps(const at::Tensor& xt, const at::Tensor& t,
                                        const at::Tensor& eps) const {
  return (xt - gather(sqrt_one_minus_alphas_cumprod_, t, xt) * eps) /
         gather(sqrt_alphas_cumprod_, t, xt);
}

at::Tensor GaussianDiffusion::epsFromX0(const at::Tensor& xt, const at::Tensor& t,
                                        const at::Tensor& x0) const {
  return (xt - gather(sqrt_alphas_cumprod_, t, xt) * x0) /
         gather(sqrt_one_minus_alphas_cumprod_, t, xt);
}

at::Tensor GaussianDiffusion::vFromX0Eps(const at::Tensor& x0, const at::Tensor& eps,
                                         const at::Tensor& t) const {
  return gather(sqrt_alphas_cumprod_, t, x0) * eps -
         gather(sqrt_one_minus_alphas_cumprod_, t, x0) * x0;
}

at::Tensor GaussianDiffusion::x0FromV(const at::Tensor& xt, const at::Tensor& t,
                                      const at::Tensor& v) const {
  return gather(sqrt_alphas_cumprod_, t, xt) * xt -
         gather(sqrt_one_minus_alphas_cumprod_, t, xt) * v;
}

at::Tensor GaussianDiffusion::epsFromV(const at::Tensor& xt, const at::Tensor& t,
                                       const at::Tensor& v) const {
  return gather(sqrt_one_minus_alphas_cumprod_, t, xt) * xt +
         gather(sqrt_alphas_cumprod_, t, xt) * v;
}

at::Tensor GaussianDiffusion::predictX0(const at::Tensor& xt, const at::Tensor& t,
                                        const at::Tensor& output) const {
  switch (options_.prediction) {
    case Prediction::kEps:
      return x0FromEps(xt, t, output);
    case Prediction::kX0:
      return output;
    case Prediction::kV:
      return x0FromV(xt, t, output);
  }
  return output;
}

at::Tensor GaussianDiffusion::predictEps(const at::Tensor& xt, const at::Tensor& t,
                                         const at::Tensor& output) const {
  switch (options_.prediction) {
    case Prediction::kEps:
      return output;
    case Prediction::kX0:
      return epsFromX0(xt, t, output);
    case Prediction::kV:
      return epsFromV(xt, t, output);
  }
  return output;
}

at::Tensor GaussianDiffusion::target(const at::Tensor& x0, const at::Tensor& noise,
                                     const at::Tensor& t) const {
  switch (options_.prediction) {
    case Prediction::kEps:
      return noise;
    case Prediction::kX0:
      return x0;
    case Prediction::kV:
      return vFromX0Eps(x0, noise, t);
  }
  return noise;
}

at::Tensor GaussianDiffusion::lossWeights(const at::Tensor& t) const {
  const at::Tensor like = at::empty({0}, at::TensorOptions().dtype(at::kFloat).device(t.device()));
  if (options_.weighting == LossWeighting::kUniform) {
    return at::ones({t.size(0)}, like.options());
  }
  // At fixed x_t: |eps_hat - eps|^2 = SNR |x0_hat - x0|^2 and |v_hat - v|^2 = (SNR + 1)
  // |x0_hat - x0|^2, so min(SNR, g) |x0_hat - x0|^2 is the MSE of each prediction type times
  // min(SNR, g) / SNR, min(SNR, g) and min(SNR, g) / (SNR + 1).
  const at::Tensor clipped = snr_.clamp_max(options_.min_snr_gamma);
  at::Tensor table;
  switch (options_.prediction) {
    case Prediction::kEps:
      table = clipped / snr_;
      break;
    case Prediction::kX0:
      table = clipped;
      break;
    case Prediction::kV:
      table = clipped / (snr_ + 1.0);
      break;
  }
  return gather(table, t, like).view({t.size(0)});
}

namespace {

at::Tensor perSampleMse(const at::Tensor& output, const at::Tensor& target) {
  TORCH_CHECK(output.sizes() == target.sizes(), "loss: output ", output.sizes(), " vs target ",
              target.sizes());
  const at::Tensor d = (output.to(at::kFloat) - target.to(at::kFloat)).pow(2);
  return d.reshape({d.size(0), -1}).mean(1);
}

at::Tensor weightedMean(const at::Tensor& per_sample, const at::Tensor& importance) {
  if (!importance.defined()) return per_sample.mean();
  return (per_sample * importance.to(per_sample.device(), at::kFloat)).mean();
}

}  // namespace

DiffusionLoss GaussianDiffusion::loss(const at::Tensor& output, const at::Tensor& x0,
                                      const at::Tensor& noise, const at::Tensor& t,
                                      const at::Tensor& importance) const {
  DiffusionLoss l;
  l.per_sample = perSampleMse(output, target(x0, noise, t));
  if (options_.weighting != LossWeighting::kUniform) {
    l.per_sample = l.per_sample * lossWeights(t).to(l.per_sample.device());
  }
  l.loss = weightedMean(l.per_sample, importance);
  return l;
}

namespace {

at::Tensor timeColumn(const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 1, "times must be a 1-d tensor, got ", t.sizes());
  std::vector<std::int64_t> shape(static_cast<std::size_t>(std::max<std::int64_t>(like.dim(), 1)),
                                  1);
  shape[0] = t.size(0);
  return t.to(like.device(), like.scalar_type()).view(shape);
}

}  // namespace

at::Tensor FlowMatching::interpolate(const at::Tensor& x0, const at::Tensor& noise,
                                     const at::Tensor& t) const {
  const at::Tensor tc = timeColumn(t, x0);
  return (1 - tc) * x0 + tc * noise;
}

at::Tensor FlowMatching::velocityTarget(const at::Tensor& x0, const at::Tensor& noise) const {
  return noise - x0;
}

// x_t = x0 + t v  and  x_t = eps - (1 - t) v.
at::Tensor FlowMatching::x0FromVelocity(const at::Tensor& xt, const at::Tensor& t,
                                        const at::Tensor& v) const {
  return xt - timeColumn(t, xt) * v;
}

at::Tensor FlowMatching::epsFromVelocity(const at::Tensor& xt, const at::Tensor& t,
                                         const at::Tensor& v) const {
  return xt + (1 - timeColumn(t, xt)) * v;
}

at::Tensor FlowMatching::modelTime(const at::Tensor& t) const {
  return t.to(at::kFloat) * options_.time_scale;
}

DiffusionLoss FlowMatching::loss(const at::Tensor& output, const at::Tensor& x0,
                                 const at::Tensor& noise, const at::Tensor& importance) const {
  DiffusionLoss l;
  l.per_sample = perSampleMse(output, velocityTarget(x0, noise));
  l.loss = weightedMean(l.per_sample, importance);
  return l;
}

at::Tensor keyedNormal(at::IntArrayRef sample_shape, std::int64_t first, std::int64_t count,
                       std::uint64_t seed, std::uint64_t a, NoiseStream stream,
                       const at::TensorOptions& options) {
  TORCH_CHECK(first >= 0 && count >= 0, "keyedNormal: bad sample range");
  std::vector<std::int64_t> shape{count};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  const c10::Device device = options.device();
  at::Tensor out = at::empty(shape, options);
  for (std::int64_t i = 0; i < count; ++i) {
    at::Generator gen =
        makeGenerator(rngKey(seed, RngPurpose::kNoise, a, static_cast<std::uint64_t>(first + i),
                             static_cast<std::uint64_t>(stream)),
                      device);
    out[i].normal_(0.0, 1.0, gen);
  }
  return out;
}

at::Tensor keyedLabelDropout(const at::Tensor& labels, double p, std::int64_t null_label,
                             std::uint64_t seed, std::int64_t step, std::int64_t first) {
  TORCH_CHECK(labels.dim() == 1, "labels must be a 1-d tensor");
  TORCH_CHECK(p >= 0 && p <= 1, "label dropout probability must be in [0, 1]");
  if (p == 0) return labels;
  const std::int64_t n = labels.size(0);
  at::Tensor drop = at::empty({n}, at::kBool);
  auto d = drop.accessor<bool, 1>();
  for (std::int64_t i = 0; i < n; ++i) {
    KeyedStream stream(rngKey(seed, RngPurpose::kDropout, static_cast<std::uint64_t>(step),
                              static_cast<std::uint64_t>(first + i), 1));
    d[i] = stream.uniform() < p;
  }
  return at::where(drop.to(labels.device()), at::full_like(labels, null_label), labels);
}

}  // namespace tessera::models
