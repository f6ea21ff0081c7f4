// Adam and AdamW with exactly PyTorch's update rule (torch.optim.Adam/AdamW, non-amsgrad), whose
// state Tessera owns: it is saved and restored by name, bit for bit, on any LibTorch version
// (LibTorch's own optimizers key their state by tensor address, differently in 1.13 and 2.x).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "trainer/optim/multi_tensor.h"

namespace tessera::trainer {

struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;  // AdamW
  // How the update runs over the parameters (trainer/optim/multi_tensor.h); kPerTensor is the
  // reference loop.
  UpdateKernel kernel = UpdateKernel::kAuto;
};

class Adam {
 public:
  Adam(std::vector<at::Tensor> params, AdamOptions options);

  // One update with learning rate `lr` from the parameters' current gradients, as multi-tensor
  // or fused element-wise updates (options.kernel). Parameters without a gradient are left alone
  // (as PyTorch does). Never reads the device on the host.
  void step(double lr);

  std::int64_t steps() const { return steps_; }

  // State as named tensors ("<index>/exp_avg", "<index>/exp_avg_sq") plus the step count.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  // Restores what state() returned (values copied into this optimizer's tensors).
  void loadState(const std::vector<std::pair<std::string, at::Tensor>>& state, std::int64_t steps);

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
  AdamOptions options_;
  std::int64_t steps_ = 0;
};

}  // namespace tessera::trainer
