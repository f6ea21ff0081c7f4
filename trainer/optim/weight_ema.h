// Exponential moving averages of a model's parameters, one copy per decay rate (e.g. 0.999 and
// 0.9999), each with its update count. Buffers are not averaged: evaluation with EMA weights uses
// the live buffers.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "trainer/optim/multi_tensor.h"

namespace tessera::trainer {

class WeightEma {
 public:
  WeightEma(std::vector<std::pair<std::string, at::Tensor>> params, std::vector<double> decays,
            UpdateKernel kernel = UpdateKernel::kAuto);

  // shadow = decay * shadow + (1 - decay) * param (shadow.lerp_(param, 1 - decay)), for every
  // rate, as multi-tensor or fused element-wise updates (trainer/optim/multi_tensor.h). With
  // warm-up, the decay of update u (1-based) is min(decay, (1 + u) / (10 + u)): early shadows
  // follow the weights instead of remembering their random initialisation.
  void update();
  void setWarmup(bool warmup) { warmup_ = warmup; }
  // The decay update number `u` (1-based) uses for `decay`.
  double effectiveDecay(double decay, std::int64_t u) const;

  const std::vector<double>& decays() const { return decays_; }
  std::int64_t updates() const { return updates_; }
  // "<decay>/<param name>" -> shadow tensor, for checkpoints and export.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void loadState(const std::vector<std::pair<std::string, at::Tensor>>& state,
                 std::int64_t updates);
  // Shadow parameters of one rate, in the order of the constructor's params.
  const std::vector<at::Tensor>& shadow(std::size_t rate) const { return shadows_.at(rate); }

  static std::string rateName(double decay);

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<double> decays_;
  std::vector<std::vector<at::Tensor>> shadows_;
  UpdateKernel kernel_;
  bool warmup_ = false;
  std::int64_t updates_ = 0;
};

}  // namespace tessera::trainer
