// The few places where Debian's LibTorch 1.13 (CPU) and PyTorch 2.x's LibTorch (CUDA) differ.
// Include only from .cpp files: it may pull in CUDA headers in the CUDA build.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sub.h>
#include <c10/core/Device.h>
#include <torch/version.h>

#include <cmath>
#include <cstdint>

#include "tessera/config.h"

#if TESSERA_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#define TESSERA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||          \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

#if TESSERA_TORCH_AT_LEAST(2, 0)
#include <ATen/ops/_foreach_lerp.h>
#endif

namespace tessera::compat {

inline at::Generator makeGenerator(std::uint64_t seed, c10::Device device) {
#if TESSERA_WITH_CUDA
  if (device.is_cuda()) {
    at::Generator gen = at::cuda::detail::createCUDAGenerator(device.index());
    gen.set_current_seed(seed);
    return gen;
  }
#endif
  TORCH_CHECK(device.is_cpu(), "no keyed generator for device ", device.str());
  return at::detail::createCPUGenerator(seed);
}

// tensors[i] *= factor for every i, where `factor` is a 0-dim tensor on the tensors' device (read
// there, never on the host). One multi-tensor kernel with _foreach_mul_.Tensor (added during 2.1;
// 2.2 is the first release certain to have it); before, one kernel per tensor. Beware: where the
// overload is missing, at::_foreach_mul_(list, tensor) still compiles (as a one-tensor list).
inline void foreachMulByTensor_(at::TensorList tensors, const at::Tensor& factor) {
#if TESSERA_TORCH_AT_LEAST(2, 2)
  at::_foreach_mul_(tensors, factor);
#else
  for (const at::Tensor& t : tensors) t.mul_(factor);
#endif
}

// self[i].lerp_(end[i], weight) for every i, with at::lerp's rounding rule. From 2.0
// _foreach_lerp_; 1.13 has none: self + weight * (end - self) for |weight| < 0.5 (lerp's own
// formula there, in two multi-tensor ops), else one lerp_ per tensor.
inline void foreachLerp_(at::TensorList self, at::TensorList end, double weight) {
#if TESSERA_TORCH_AT_LEAST(2, 0)
  at::_foreach_lerp_(self, end, weight);
#else
  if (std::abs(static_cast<float>(weight)) < 0.5f) {
    at::_foreach_add_(self, at::_foreach_sub(end, self), weight);
  } else {
    for (std::size_t i = 0; i < self.size(); ++i) self[i].lerp_(end[i], weight);
  }
#endif
}

}  // namespace tessera::compat
