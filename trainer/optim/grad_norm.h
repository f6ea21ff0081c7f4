// The global L2 norm of a model's gradients and clipping by it (torch.nn.utils.clip_grad_norm_),
// computed where the gradients are, as a handful of multi-tensor ops, and never read on the host:
// on CUDA neither function waits for the device.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace tessera::trainer {

// sqrt(sum of the squares of every element of every gradient) as a 0-dim float32 tensor on the
// gradients' device (they share one); float16/bfloat16 gradients accumulate in float32, float64
// ones in float64. Undefined tensors are skipped; with none defined, a CPU zero.
at::Tensor globalNorm(const std::vector<at::Tensor>& grads);

// As torch.nn.utils.clip_grad_norm_: multiplies every defined gradient in place by
// coef = max_norm / (norm + 1e-6) when coef < 1 (coef in float64, then rounded to float32,
// exactly as a host-side double multiplier is by LibTorch's kernels). `norm` is the 0-dim
// tensor globalNorm(grads) returned, on the gradients' device. On CUDA the comparison happens on
// the device (the multiplier is 1 when coef >= 1); on the CPU, where reading it costs nothing,
// nothing is touched when coef >= 1. A NaN norm leaves the gradients alone. max_norm > 0.
void clipByGlobalNorm(const std::vector<at::Tensor>& grads, double max_norm,
                      const at::Tensor& norm);

// The per-tensor implementations these replace (two kernels per tensor for the norm, a host read
// of the norm before clipping): the baseline of `tessera bench optim` and of the tests.
namespace reference {
at::Tensor globalNorm(const std::vector<at::Tensor>& grads);
void clipByGlobalNorm(const std::vector<at::Tensor>& grads, double max_norm,
                      const at::Tensor& norm);
}  // namespace reference

}  // namespace tessera::trainer
