// Everything that turns one module's gradients into an update, for one optimizer: the bucketed
// gradient all-reduce, global-norm clipping, Adam/AdamW and weight EMAs. A task with two
// alternately trained models (a GAN) owns two of these.
#pragma once

#include <torch/nn/module.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "comm/grad_reducer.h"
#include "trainer/optim/adam.h"
#include "trainer/optim/weight_ema.h"

namespace tessera::trainer {

struct UpdaterOptions {
  AdamOptions adam;
  double clip_grad_norm = 0;  // 0: no clipping
  std::vector<double> ema;    // decays of weight EMAs
  comm::GradReducerOptions reducer;
};

class ModelUpdater {
 public:
  ModelUpdater(std::string name, torch::nn::Module& module, comm::Communicator& comm,
               UpdaterOptions options);

  const std::string& name() const { return name_; }

  // Start of a step: zero every gradient (they live in the reducer's buckets).
  void zeroGrad();
  // Before each micro-batch's backward; communication happens during the last one.
  void prepareBackward(bool last_micro_batch, std::int64_t step);
  // What every loss is multiplied by before backward (1 / world size): the reducer then only
  // sums, which saves a pass over the gradients, and the result is still their average.
  double lossScale() const { return reducer_->lossScale(); }
  // After the last backward: waits for the averaged gradients and measures their global norm.
  void finishBackward();
  // Global L2 norm of the averaged gradients before clipping; identical on every rank.
  double gradNorm() const { return grad_norm_; }
  // Clip, optimizer step with `lr`, weight-EMA update.
  void apply(double lr);

  const comm::ReducerStats& commStats() const { return reducer_->stats(); }
  const WeightEma* ema() const { return ema_ ? &*ema_ : nullptr; }

  // Optimizer and EMA state: tensors "optim/<name>/..." and "ema/<name>/<rate>/<param>", ints
  // "optim/<name>/steps" and "ema/<name>/updates".
  void collectState(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                    std::map<std::string, std::int64_t>& ints) const;
  void restoreState(const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, std::int64_t>& ints);

 private:
  std::string name_;
  std::vector<at::Tensor> params_;
  UpdaterOptions options_;
  std::unique_ptr<comm::GradReducer> reducer_;
  Adam adam_;
  std::optional<WeightEma> ema_;
  double grad_norm_ = 0;
};

}  // namespace tessera::trainer
