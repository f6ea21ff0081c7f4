#include "trainer/optim/optim_benchmark.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <string>

#include "core/keyed_rng.h"
#include "trainer/optim/adam.h"
#include "trainer/optim/grad_norm.h"
#include "trainer/optim/weight_ema.h"

namespace tessera::trainer {
namespace {

using Shapes = std::vector<std::vector<std::int64_t>>;
using Clock = std::chrono::steady_clock;

// The ddpm-cifar10 UNet's modules, in the order its parameters are registered.
class UnetShapes {
 public:
  explicit UnetShapes(std::int64_t ch) : temb_(4 * ch) {}

  void linear(std::int64_t in, std::int64_t out) {
    add({out, in});
    add({out});
  }
  void conv(std::int64_t in, std::int64_t out, std::int64_t k) {
    add({out, in, k, k});
    add({out});
  }
  void norm(std::int64_t c) {
    add({c});
    add({c});
  }
  // GroupNorm, conv 3x3, timestep projection, GroupNorm, conv 3x3, 1x1 shortcut when the
  // channels change.
  void resBlock(std::int64_t in, std::int64_t out) {
    norm(in);
    conv(in, out, 3);
    linear(temb_, out);
    norm(out);
    conv(out, out, 3);
    if (in != out) conv(in, out, 1);
  }
  // GroupNorm and 1x1 q, k, v and output projections.
  void attention(std::int64_t c) {
    norm(c);
    for (int i = 0; i < 4; ++i) conv(c, c, 1);
  }
  Shapes take() { return std::move(shapes_); }

 private:
  void add(std::vector<std::int64_t> shape) { shapes_.push_back(std::move(shape)); }
  std::int64_t temb_;
  Shapes shapes_;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

constexpr double kLr = 2e-4;
constexpr double kMaxNorm = 1.0;
constexpr double kEmaDecay = 0.9999;
constexpr std::size_t kComponents = 4;  // norm, clip, adam, ema
const std::array<const char*, kComponents> kComponentNames{"norm", "clip", "adam", "ema"};

// One path's parameters, optimizer and EMA.
class Path {
 public:
  Path(const std::vector<at::Tensor>& init, bool reference) : reference_(reference) {
    c10::NoGradGuard no_grad;
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (std::size_t i = 0; i < init.size(); ++i) {
      at::Tensor p = init[i].clone().requires_grad_(true);
      p.mutable_grad() = at::zeros_like(p);
      params_.push_back(p);
      named.emplace_back(std::to_string(i), p);
    }
    const UpdateKernel kernel = reference ? UpdateKernel::kPerTensor : UpdateKernel::kAuto;
    AdamOptions o;
    o.kernel = kernel;
    adam_ = std::make_unique<Adam>(params_, o);
    ema_ = std::make_unique<WeightEma>(std::move(named), std::vector<double>{kEmaDecay}, kernel);
  }

  void resetGrads(const std::vector<at::Tensor>& source) {
    c10::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params_.size(); ++i) params_[i].mutable_grad().copy_(source[i]);
  }

  // One step; `marks` receives the time after each component when `timed` (CPU).
  void step(bool timed, std::array<Clock::time_point, kComponents + 1>& marks) {
    std::vector<at::Tensor> grads;
    grads.reserve(params_.size());
    for (const auto& p : params_) grads.push_back(p.grad());
    if (timed) marks[0] = Clock::now();
    const at::Tensor norm = reference_ ? reference::globalNorm(grads) : globalNorm(grads);
    if (timed) marks[1] = Clock::now();
    if (reference_) {
      reference::clipByGlobalNorm(grads, kMaxNorm, norm);
    } else {
      clipByGlobalNorm(grads, kMaxNorm, norm);
    }
    if (timed) marks[2] = Clock::now();
    adam_->step(kLr);
    if (timed) marks[3] = Clock::now();
    ema_->update();
    if (timed) marks[4] = Clock::now();
  }

  const std::vector<at::Tensor>& params() const { return params_; }

 private:
  bool reference_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<Adam> adam_;
  std::unique_ptr<WeightEma> ema_;
};

}  // namespace

Shapes ddpmUnetParameterShapes(std::int64_t ch) {
  const std::vector<std::int64_t> mult{1, 2, 2, 2};
  const int blocks = 2;
  const std::int64_t attention_resolution = 16, image = 32, in_channels = 3;
  UnetShapes s(ch);
  s.linear(ch, 4 * ch);  // timestep embedding
  s.linear(4 * ch, 4 * ch);
  s.conv(in_channels, ch, 3);
  std::vector<std::int64_t> skips{ch};
  std::int64_t c = ch, resolution = image;
  for (std::size_t level = 0; level < mult.size(); ++level) {
    for (int b = 0; b < blocks; ++b) {
      s.resBlock(c, ch * mult[level]);
      c = ch * mult[level];
      if (resolution == attention_resolution) s.attention(c);
      skips.push_back(c);
    }
    if (level + 1 < mult.size()) {
      s.conv(c, c, 3);  // downsample
      resolution /= 2;
      skips.push_back(c);
    }
  }
  s.resBlock(c, c);  // middle
  s.attention(c);
  s.resBlock(c, c);
  for (std::size_t level = mult.size(); level-- > 0;) {
    for (int b = 0; b < blocks + 1; ++b) {
      const std::int64_t skip = skips.back();
      skips.pop_back();
      s.resBlock(c + skip, ch * mult[level]);
      c = ch * mult[level];
      if (resolution == attention_resolution) s.attention(c);
    }
    if (level > 0) {
      s.conv(c, c, 3);  // upsample
      resolution *= 2;
    }
  }
  s.norm(c);
  s.conv(c, in_channels, 3);
  return s.take();
}

JsonObject benchmarkOptimizerStep(const OptimBenchOptions& o) {
  const Shapes shapes = ddpmUnetParameterShapes(o.base_channels);
  auto gen = makeGenerator(rngKey(o.seed, RngPurpose::kTest, 12));
  std::vector<at::Tensor> init, grads;
  std::int64_t params = 0;
  for (const auto& shape : shapes) {
    init.push_back((at::randn(shape, gen) * 0.05).to(o.device));
    grads.push_back(at::randn(shape, gen).to(o.device));
    params += init.back().numel();
  }
  Path reference(init, true), multi(init, false);
  const bool cuda = o.device.is_cuda();
  const bool components = o.device.is_cpu();
  const auto sync = [&] {
    if (cuda) torch::cuda::synchronize(o.device.index());
  };

  // Per path: the mean step time of each round and each component's per-step times.
  std::array<std::vector<double>, 2> rounds;
  std::array<std::array<std::vector<double>, kComponents>, 2> parts;
  std::array<Path*, 2> paths{&reference, &multi};
  std::array<Clock::time_point, kComponents + 1> marks;
  for (int w = 0; w < o.warmup; ++w) {
    for (Path* p : paths) {
      p->resetGrads(grads);
      p->step(false, marks);
    }
  }
  sync();
  for (int r = 0; r < o.rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      const int which = (r % 2 == 0) ? k : 1 - k;
      Path& path = *paths[which];
      double total = 0;
      for (int s = 0; s < o.steps; ++s) {
        path.resetGrads(grads);
        sync();
        const auto t0 = Clock::now();
        path.step(components, marks);
        sync();
        total += seconds(t0, Clock::now());
        if (components) {
          for (std::size_t c = 0; c < kComponents; ++c) {
            parts[which][c].push_back(seconds(marks[c], marks[c + 1]));
          }
        }
      }
      rounds[which].push_back(total / std::max(1, o.steps));
    }
  }

  std::vector<double> ratios;
  for (std::size_t r = 0; r < rounds[0].size(); ++r) ratios.push_back(rounds[0][r] / rounds[1][r]);
  double diff = 0;
  for (std::size_t i = 0; i < init.size(); ++i) {
    const at::Tensor a = reference.params()[i].detach().to(at::kDouble);
    const at::Tensor b = multi.params()[i].detach().to(at::kDouble);
    const double scale = a.abs().max().item<double>();
    if (scale > 0) diff = std::max(diff, (a - b).abs().max().item<double>() / scale);
  }
  const auto ms = [](std::vector<double> v) {
    for (auto& x : v) x *= 1e3;
    return v;
  };
  const double ref_ms = median(rounds[0]) * 1e3, multi_ms = median(rounds[1]) * 1e3;

  JsonObject out;
  out.add("bench", "optim")
      .add("model", "ddpm-cifar10-unet")
      .add("base_channels", o.base_channels)
      .add("tensors", static_cast<std::int64_t>(shapes.size()))
      .add("params", params)
      .add("device", o.device.str())
      .add("threads", at::get_num_threads())
      .add("kernel", updateKernelName(resolveUpdateKernel(UpdateKernel::kAuto, o.device)))
      .add("rounds", o.rounds)
      .add("steps_per_round", o.steps)
      .add("reference_ms", ref_ms)
      .add("multi_tensor_ms", multi_ms)
      .add("speedup", multi_ms > 0 ? ref_ms / multi_ms : 0.0)
      .add("speedup_median_of_rounds", median(ratios))
      .add("reference_ms_rounds", ms(rounds[0]))
      .add("multi_tensor_ms_rounds", ms(rounds[1]));
  if (components) {
    for (int which = 0; which < 2; ++which) {
      JsonObject c;
      for (std::size_t k = 0; k < kComponents; ++k) {
        c.add(kComponentNames[k], median(parts[which][k]) * 1e3);
      }
      out.add(which == 0 ? "reference_components_ms" : "multi_tensor_components_ms", c);
    }
  }
  out.add("max_param_diff", diff);
  return out;
}

}  // namespace tessera::trainer
