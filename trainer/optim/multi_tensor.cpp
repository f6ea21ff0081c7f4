#include "trainer/optim/multi_tensor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "core/torch_compat.h"

namespace tessera::trainer {

std::string updateKernelName(UpdateKernel kernel) {
  switch (kernel) {
    case UpdateKernel::kAuto:
      return "auto";
    case UpdateKernel::kPerTensor:
      return "per-tensor";
    case UpdateKernel::kForeach:
      return "foreach";
    case UpdateKernel::kFusedCpu:
      return "fused-cpu";
  }
  return "?";
}

UpdateKernel resolveUpdateKernel(UpdateKernel kernel, c10::Device device) {
  if (kernel != UpdateKernel::kAuto) return kernel;
  return device.is_cpu() ? UpdateKernel::kFusedCpu : UpdateKernel::kForeach;
}

namespace multi_tensor {
namespace {

// Elements per task of at::parallel_for (LibTorch's own element-wise grain).
constexpr std::int64_t kGrain = 32768;

bool fusable(const at::Tensor& first, std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() ||
        t->numel() != first.numel()) {
      return false;
    }
  }
  return true;
}

// In-place ATen ops bump a tensor's version counter (autograd's check that saved tensors were
// not modified); writes through data pointers must do it themselves.
void bumpVersion(const at::Tensor& t) {
  t.unsafeGetTensorImpl()->bump_version();
}

enum class Decay { kNone, kL2, kDecoupled };

// One pass over n elements. The arithmetic is the reference's, op for op and in float as
// LibTorch's CPU kernels compute with float scalars:
//   p *= 1 - lr wd (AdamW);  g' = g + wd p (Adam's L2);  m = m b1 + (1 - b1) g';
//   v = v b2 + (1 - b2) g' g';  p = p + (-step_size m) / (sqrt(v) / bias2_sqrt + eps)
template <Decay kDecay>
void adamRange(float* __restrict p, const float* __restrict g, float* __restrict m,
               float* __restrict v, std::int64_t begin, std::int64_t end, const AdamStep& s) {
  const float decay = static_cast<float>(1 - s.lr * s.weight_decay);
  const float wd = static_cast<float>(s.weight_decay);
  const float b1 = static_cast<float>(s.beta1), one_minus_b1 = static_cast<float>(1 - s.beta1);
  const float b2 = static_cast<float>(s.beta2), one_minus_b2 = static_cast<float>(1 - s.beta2);
  const float bias2_sqrt = static_cast<float>(s.bias2_sqrt);
  const float eps = static_cast<float>(s.eps);
  const float neg_step = static_cast<float>(-s.step_size);
  for (std::int64_t i = begin; i < end; ++i) {
    float pi = p[i];
    if constexpr (kDecay == Decay::kDecoupled) pi = pi * decay;
    float gi = g[i];
    if constexpr (kDecay == Decay::kL2) gi = gi + wd * pi;
    const float mi = m[i] * b1 + one_minus_b1 * gi;
    const float vi = v[i] * b2 + one_minus_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bias2_sqrt + eps;
    p[i] = pi + neg_step * mi / denom;
  }
}

void adamFused(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m, const at::Tensor& v,
               const AdamStep& s) {
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  const Decay decay = s.weight_decay == 0        ? Decay::kNone
                      : s.decoupled_weight_decay ? Decay::kDecoupled
                                                 : Decay::kL2;
  at::parallel_for(0, p.numel(), kGrain, [&](std::int64_t begin, std::int64_t end) {
    switch (decay) {
      case Decay::kNone:
        adamRange<Decay::kNone>(pp, gp, mp, vp, begin, end, s);
        break;
      case Decay::kL2:
        adamRange<Decay::kL2>(pp, gp, mp, vp, begin, end, s);
        break;
      case Decay::kDecoupled:
        adamRange<Decay::kDecoupled>(pp, gp, mp, vp, begin, end, s);
        break;
    }
  });
  bumpVersion(p);
  bumpVersion(m);
  bumpVersion(v);
}

void adamPerTensor(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                   const std::vector<at::Tensor>& exp_avg,
                   const std::vector<at::Tensor>& exp_avg_sq, const AdamStep& s) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    at::Tensor g = grads[i];
    if (s.weight_decay != 0) {
      if (s.decoupled_weight_decay) {
        p.mul_(1 - s.lr * s.weight_decay);
      } else {
        g = g.add(p, s.weight_decay);
      }
    }
    exp_avg[i].mul_(s.beta1).add_(g, 1 - s.beta1);
    exp_avg_sq[i].mul_(s.beta2).addcmul_(g, g, 1 - s.beta2);
    const at::Tensor denom = (exp_avg_sq[i].sqrt() / s.bias2_sqrt).add_(s.eps);
    p.addcdiv_(exp_avg[i], denom, -s.step_size);
  }
}

// The per-tensor sequence as multi-tensor ops (torch.optim's _multi_tensor_adam without its
// in-place shortcuts, so that on the CPU every element sees the reference's kernels).
void adamForeach(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                 const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq,
                 const AdamStep& s) {
  if (params.empty()) return;
  std::vector<at::Tensor> g = grads;
  if (s.weight_decay != 0) {
    if (s.decoupled_weight_decay) {
      at::_foreach_mul_(params, 1 - s.lr * s.weight_decay);
    } else {
      g = at::_foreach_add(grads, params, s.weight_decay);
    }
  }
  at::_foreach_mul_(exp_avg, s.beta1);
  at::_foreach_add_(exp_avg, g, 1 - s.beta1);
  at::_foreach_mul_(exp_avg_sq, s.beta2);
  at::_foreach_addcmul_(exp_avg_sq, g, g, 1 - s.beta2);
  std::vector<at::Tensor> denom = at::_foreach_sqrt(exp_avg_sq);
  at::_foreach_div_(denom, s.bias2_sqrt);
  at::_foreach_add_(denom, s.eps);
  at::_foreach_addcdiv_(params, exp_avg, denom, -s.step_size);
}

// at::lerp's formula in float, as LibTorch's CPU kernel computes it.
void lerpRange(float* __restrict self, const float* __restrict end, std::int64_t begin,
               std::int64_t stop, float weight) {
  if (std::abs(weight) < 0.5f) {
    for (std::int64_t i = begin; i < stop; ++i) self[i] = self[i] + weight * (end[i] - self[i]);
  } else {
    const float one_minus = 1.0f - weight;
    for (std::int64_t i = begin; i < stop; ++i) {
      self[i] = end[i] - (end[i] - self[i]) * one_minus;
    }
  }
}

void lerpFused(const at::Tensor& self, const at::Tensor& end, double weight) {
  float* sp = self.data_ptr<float>();
  const float* ep = end.data_ptr<float>();
  const float w = static_cast<float>(weight);
  at::parallel_for(0, self.numel(), kGrain, [&](std::int64_t begin, std::int64_t stop) {
    lerpRange(sp, ep, begin, stop, w);
  });
  bumpVersion(self);
}

}  // namespace

void adam(UpdateKernel kernel, const std::vector<at::Tensor>& params,
          const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& exp_avg,
          const std::vector<at::Tensor>& exp_avg_sq, const AdamStep& step) {
  TORCH_CHECK(grads.size() == params.size() && exp_avg.size() == params.size() &&
                  exp_avg_sq.size() == params.size(),
              "multi_tensor::adam: lists of different lengths");
  if (params.empty()) return;
  kernel = resolveUpdateKernel(kernel, params.front().device());
  if (kernel == UpdateKernel::kPerTensor)
    return adamPerTensor(params, grads, exp_avg, exp_avg_sq, step);
  if (kernel == UpdateKernel::kForeach)
    return adamForeach(params, grads, exp_avg, exp_avg_sq, step);
  std::vector<at::Tensor> rest_p, rest_g, rest_m, rest_v;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    if (fusable(p, {&p, &grads[i], &exp_avg[i], &exp_avg_sq[i]})) {
      adamFused(p, grads[i], exp_avg[i], exp_avg_sq[i], step);
    } else {
      rest_p.push_back(p);
      rest_g.push_back(grads[i]);
      rest_m.push_back(exp_avg[i]);
      rest_v.push_back(exp_avg_sq[i]);
    }
  }
  adamForeach(rest_p, rest_g, rest_m, rest_v, step);
}

void lerp(UpdateKernel kernel, const std::vector<at::Tensor>& self,
          const std::vector<at::Tensor>& end, double weight) {
  TORCH_CHECK(self.size() == end.size(), "multi_tensor::lerp: lists of different lengths");
  if (self.empty()) return;
  kernel = resolveUpdateKernel(kernel, self.front().device());
  if (kernel == UpdateKernel::kPerTensor) {
    for (std::size_t i = 0; i < self.size(); ++i) self[i].lerp_(end[i], weight);
    return;
  }
  if (kernel == UpdateKernel::kForeach) return compat::foreachLerp_(self, end, weight);
  std::vector<at::Tensor> rest_self, rest_end;
  for (std::size_t i = 0; i < self.size(); ++i) {
    if (fusable(self[i], {&self[i], &end[i]})) {
      lerpFused(self[i], end[i], weight);
    } else {
      rest_self.push_back(self[i]);
      rest_end.push_back(end[i]);
    }
  }
  if (!rest_self.empty()) compat::foreachLerp_(rest_self, rest_end, weight);
}

}  // namespace multi_tensor
}  // namespace tessera::trainer
