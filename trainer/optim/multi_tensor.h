// Element-wise updates over many tensors at once (issue 12, "Multi-tensor updates"): Adam/AdamW
// and the weight EMA's lerp. A UNet has hundreds of parameter tensors, and the reference loop
// issues several small kernels per tensor: about 3,000 per step for Adam and one EMA on the
// 328-tensor ddpm-cifar10 UNet (docs/benchmarks.md). Two replacements:
//  - kForeach: at::_foreach_* ops, one launch per op for the whole list on CUDA. On the CPU
//    LibTorch runs them as the same per-tensor kernels (bitwise the reference's results), one op
//    over every tensor after the other, which leaves the cache between ops: slower there.
//  - kFusedCpu: the whole update of an element in one pass over each tensor (float32 and
//    contiguous CPU tensors; any other goes the kForeach way): 7 element reads and writes for
//    Adam against about 20, and no temporaries.
// All results are deterministic (element-wise, independent of the thread count). kFusedCpu's
// differ from the reference's by rounding only (LibTorch's AVX2 kernels fuse some multiply-adds;
// see tests/trainer/optim_test.cpp for the bounds).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace tessera::trainer {

enum class UpdateKernel {
  kAuto,       // kFusedCpu on the CPU, kForeach elsewhere
  kPerTensor,  // the reference: a loop over tensors, several ATen ops on each
  kForeach,
  kFusedCpu,
};

std::string updateKernelName(UpdateKernel kernel);
// kAuto resolved for tensors on `device`.
UpdateKernel resolveUpdateKernel(UpdateKernel kernel, c10::Device device);

namespace multi_tensor {

// One Adam/AdamW step's scalars, computed as torch.optim.Adam computes them.
struct AdamStep {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;
  double bias2_sqrt = 1;  // sqrt(1 - beta2^t)
  double step_size = 0;   // lr / (1 - beta1^t)
};

// The Adam/AdamW update (torch.optim.Adam/AdamW, non-amsgrad) of params[i] from grads[i] with
// moments exp_avg[i] and exp_avg_sq[i]. The four lists have the same length; every gradient is
// defined and shaped like its parameter. Call under NoGradGuard.
void adam(UpdateKernel kernel, const std::vector<at::Tensor>& params,
          const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& exp_avg,
          const std::vector<at::Tensor>& exp_avg_sq, const AdamStep& step);

// self[i].lerp_(end[i], weight) for every i (at::lerp's formula, which computes from `end` when
// weight >= 0.5). Call under NoGradGuard.
void lerp(UpdateKernel kernel, const std::vector<at::Tensor>& self,
          const std::vector<at::Tensor>& end, double weight);

}  // namespace multi_tensor
}  // namespace tessera::trainer
