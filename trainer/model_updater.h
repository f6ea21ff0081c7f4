// Everything that turns one module's gradients into an update, for one optimizer: the bucketed
// gradient all-reduce, global-norm clipping, Adam/AdamW and weight EMAs (ModelUpdater); and the
// set of a task's optimizers with the one update routine every task uses (Updaters). A task with
// two alternately trained models (a GAN) has two updaters in its set.
#pragma once

#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/grad_reducer.h"
#include "trainer/optim/adam.h"
#include "trainer/optim/weight_ema.h"
#include "trainer/task.h"

namespace tessera::trainer {

struct UpdaterOptions {
  AdamOptions adam;
  double clip_grad_norm = 0;  // 0: no clipping
  std::vector<double> ema;    // decays of weight EMAs
  bool ema_warmup = false;    // decay min(decay, (1 + u) / (10 + u)) at update u
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
  // After the last backward: waits for the averaged gradients. Their global L2 norm is then
  // gradNormTensor(), a 0-dim tensor on the device (not read by the host here).
  void finishBackward();
  const at::Tensor& gradNormTensor() const { return grad_norm_tensor_; }
  // The norm as read by the host (Updaters::update sets it with the finiteness check's read).
  double gradNorm() const { return grad_norm_; }
  void setGradNorm(double norm) { grad_norm_ = norm; }
  // Clip (from gradNorm()), optimizer step with `lr`, weight-EMA update.
  void apply(double lr);

  // The parameters this updater trains (those that required grad at construction).
  const std::vector<at::Tensor>& parameters() const { return params_; }
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
  at::Tensor grad_norm_tensor_;
  double grad_norm_ = 0;
};

// A task's optimizers, all reducing on one communicator, and the update every task runs.
//
// Order rules (enforced by comm::GradReducer): one optimizer's update at a time; an optimizer's
// parameters get gradients only inside its own update (update() freezes every other updater's
// parameters while a loss is built and backpropagated); average() — for gradients taken with
// torch::autograd::grad, e.g. an adaptive loss weight — runs outside any update's backward.
class Updaters {
 public:
  explicit Updaters(comm::Communicator& comm) : comm_(comm) {}

  ModelUpdater& add(const std::string& name, torch::nn::Module& module, UpdaterOptions options);
  ModelUpdater& operator[](const std::string& name);

  // One update of optimizer `name`: zero its gradients; for each of `micro_batches` micro-
  // batches prepare its reducer, take `loss(i)` (that micro-batch's mean loss), scale it by
  // lossScale() / micro_batches and run backward; wait for the averaged gradients; agree with
  // every rank (ctx.agree_finite) that the losses and the gradient norm are finite — the step's
  // one read of device values by the host — and then clip, step with ctx.lr(name) and update
  // the EMAs, or skip, on every rank alike. The other updaters' parameters do not require grad
  // meanwhile (restored afterwards, also on errors).
  OptimizerOutcome update(const std::string& name, const StepContext& ctx, int micro_batches,
                          const std::function<at::Tensor(int)>& loss);

  // While alive, the parameters of every updater but `keep` do not require grad (restored on
  // destruction). update() does this itself; a task that builds a loss through another model
  // before calling update() (e.g. to take autograd::grad of it for an adaptive weight) holds one
  // while it does.
  class Frozen {
   public:
    Frozen(const Updaters& set, const std::string& keep);
    ~Frozen();
    Frozen(const Frozen&) = delete;
    Frozen& operator=(const Frozen&) = delete;

   private:
    std::vector<at::Tensor> frozen_;
  };

  // In place: the average over ranks of each tensor (one all-reduce on the gradient
  // communicator, labelled `what`). Every rank calls it with the same shapes.
  void average(std::vector<at::Tensor>& tensors, const std::string& what, std::int64_t step);

  void collectState(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                    std::map<std::string, std::int64_t>& ints) const;
  void restoreState(const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, std::int64_t>& ints);
  std::vector<const comm::ReducerStats*> commStats() const;

 private:
  comm::Communicator& comm_;
  std::vector<std::unique_ptr<ModelUpdater>> updaters_;
};

}  // namespace tessera::trainer
