#include "models/samplers.h"

#include <torch/torch.h>

#include <cmath>

namespace tessera::models {

std::string toString(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::kAncestral:
      return "ancestral";
    case SamplerKind::kDdim:
      return "ddim";
    case SamplerKind::kDpmSolver2M:
      return "dpmpp_2m";
    case SamplerKind::kEuler:
      return "euler";
    case SamplerKind::kHeun:
      return "heun";
  }
  return "?";
}

bool isGaussianSampler(SamplerKind kind) {
  return kind == SamplerKind::kAncestral || kind == SamplerKind::kDdim ||
         kind == SamplerKind::kDpmSolver2M;
}

DenoiserFn classifierFreeGuidance(LabeledDenoiserFn model, at::Tensor labels,
                                  std::int64_t null_label, double scale) {
  TORCH_CHECK(labels.defined() && labels.dim() == 1, "guidance: labels must be int64 [B]");
  return [model = std::move(model), labels = labels.to(at::kLong), null_label, scale](
             const at::Tensor& x, const at::Tensor& t) -> at::Tensor {
    const at::Tensor y = labels.to(x.device());
    TORCH_CHECK(y.size(0) == x.size(0), "guidance: ", y.size(0), " labels for ", x.size(0),
                " samples");
    if (scale == 1.0) return model(x, t, y);
    const at::Tensor nulls = at::full_like(y, null_label);
    if (scale == 0.0) return model(x, t, nulls);
    const at::Tensor out = model(at::cat({x, x}), at::cat({t, t}), at::cat({y, nulls}));
    const auto halves = out.chunk(2, 0);
    return halves[1] + (halves[0] - halves[1]) * scale;
  };
}

std::vector<std::int64_t> respacedTimesteps(std::int64_t timesteps, std::int64_t steps) {
  TORCH_CHECK(steps >= 1 && steps <= timesteps, "sampler: steps must be in [1, ", timesteps,
              "], got ", steps);
  if (steps == 1) return {timesteps - 1};
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < steps; ++i) {
    const double x = static_cast<double>(i) * static_cast<double>(timesteps - 1) /
                     static_cast<double>(steps - 1);
    out.push_back(static_cast<std::int64_t>(std::llround(x)));
  }
  return out;
}

namespace {

at::Tensor initialNoise(const SamplerOptions& s, at::IntArrayRef shape, std::int64_t first,
                        std::int64_t count, const at::TensorOptions& options) {
  return keyedNormal(shape, first, count, s.seed, 0, NoiseStream::kSampling, options);
}

at::Tensor stageNoise(const SamplerOptions& s, std::int64_t stage, at::IntArrayRef shape,
                      std::int64_t first, std::int64_t count, const at::TensorOptions& options) {
  return keyedNormal(shape, first, count, s.seed, static_cast<std::uint64_t>(stage),
                     NoiseStream::kSampling, options);
}

}  // namespace

at::Tensor sampleDiffusion(const GaussianDiffusion& diffusion, const DenoiserFn& model,
                           const SamplerOptions& s, at::IntArrayRef shape, std::int64_t first,
                           std::int64_t count, const at::TensorOptions& options) {
  TORCH_CHECK(isGaussianSampler(s.kind), "sampler '", toString(s.kind),
              "' is for the interpolation process, not a Gaussian diffusion");
  TORCH_CHECK(s.eta >= 0, "sampler: eta must be >= 0");
  torch::NoGradGuard no_grad;
  const std::vector<std::int64_t> taus = respacedTimesteps(diffusion.timesteps(), s.steps);
  at::Tensor x = initialNoise(s, shape, first, count, options);
  if (count == 0) return x;
  const auto idx_opts = at::TensorOptions().dtype(at::kLong).device(options.device());
  const auto time_opts = at::TensorOptions().dtype(at::kFloat).device(options.device());

  at::Tensor prev_x0;  // DPM-Solver++(2M): the previous data prediction
  double h_prev = 0;
  std::int64_t stage = 1;
  for (auto i = static_cast<std::int64_t>(taus.size()) - 1; i >= 0; --i, ++stage) {
    const std::int64_t t = taus[static_cast<std::size_t>(i)];
    const std::int64_t t_prev = i > 0 ? taus[static_cast<std::size_t>(i - 1)] : -1;
    const double abar = diffusion.alphaCumprod(t);
    const double abar_prev = t_prev >= 0 ? diffusion.alphaCumprod(t_prev) : 1.0;
    const at::Tensor t_idx = at::full({count}, t, idx_opts);
    const at::Tensor out = model(x, at::full({count}, static_cast<double>(t), time_opts));
    at::Tensor x0 = diffusion.predictX0(x, t_idx, out);
    at::Tensor eps;
    if (s.clip_x0) {
      x0 = x0.clamp(-1.0, 1.0);
      eps = (x - std::sqrt(abar) * x0) / std::sqrt(1.0 - abar);
    } else {
      eps = diffusion.predictEps(x, t_idx, out);
    }
    if (t_prev < 0) {  // the last step lands on the clean image
      x = x0;
      break;
    }
    switch (s.kind) {
      case SamplerKind::kAncestral: {
        // The (respaced) chain's beta and posterior q(x_prev | x_t, x0).
        const double beta = 1.0 - abar / abar_prev;
        const double coef1 = std::sqrt(abar_prev) * beta / (1.0 - abar);
        const double coef2 = std::sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar);
        const double var =
            s.ancestral_beta_variance ? beta : beta * (1.0 - abar_prev) / (1.0 - abar);
        x = coef1 * x0 + coef2 * x +
            std::sqrt(var) * stageNoise(s, stage, shape, first, count, options);
        break;
      }
      case SamplerKind::kDdim: {
        const double sigma =
            s.eta * std::sqrt((1.0 - abar_prev) / (1.0 - abar)) * std::sqrt(1.0 - abar / abar_prev);
        const double dir = std::sqrt(std::max(1.0 - abar_prev - sigma * sigma, 0.0));
        x = std::sqrt(abar_prev) * x0 + dir * eps;
        if (sigma > 0) x = x + sigma * stageNoise(s, stage, shape, first, count, options);
        break;
      }
      case SamplerKind::kDpmSolver2M: {
        const double alpha_prev = std::sqrt(abar_prev), sigma_prev = std::sqrt(1.0 - abar_prev);
        const double sigma_t = std::sqrt(1.0 - abar);
        const double h =
            0.5 * (std::log(abar_prev / (1.0 - abar_prev)) - std::log(abar / (1.0 - abar)));
        // Second order from the second step on, except into the last timestep, where h is the
        // largest of the schedule and the extrapolation overshoots (first order there).
        at::Tensor d = x0;
        if (prev_x0.defined() && i > 1) {
          const double r = h_prev / h;
          d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * prev_x0;
        }
        x = (sigma_prev / sigma_t) * x - alpha_prev * std::expm1(-h) * d;
        prev_x0 = x0;
        h_prev = h;
        break;
      }
      default:
        break;
    }
  }
  return x;
}

at::Tensor sampleFlow(const FlowMatching& flow, const DenoiserFn& model, const SamplerOptions& s,
                      at::IntArrayRef shape, std::int64_t first, std::int64_t count,
                      const at::TensorOptions& options) {
  TORCH_CHECK(!isGaussianSampler(s.kind), "sampler '", toString(s.kind),
              "' is for a Gaussian diffusion, not the interpolation process");
  TORCH_CHECK(s.steps >= 1, "sampler: steps must be >= 1");
  torch::NoGradGuard no_grad;
  at::Tensor x = initialNoise(s, shape, first, count, options);
  if (count == 0) return x;
  const auto time_opts = at::TensorOptions().dtype(at::kFloat).device(options.device());
  const auto velocity = [&](const at::Tensor& xt, double t) {
    return model(xt, flow.modelTime(at::full({count}, t, time_opts)));
  };
  const double n = static_cast<double>(s.steps);
  for (std::int64_t i = 0; i < s.steps; ++i) {
    const double t = 1.0 - static_cast<double>(i) / n;
    const double t_next = 1.0 - static_cast<double>(i + 1) / n;
    const double dt = t_next - t;  // negative
    const at::Tensor v = velocity(x, t);
    if (s.kind == SamplerKind::kHeun && i + 1 < s.steps) {
      const at::Tensor x_euler = x + dt * v;
      x = x + (0.5 * dt) * (v + velocity(x_euler, t_next));
    } else {
      x = x + dt * v;
    }
  }
  return x;
}

}  // namespace tessera::models
