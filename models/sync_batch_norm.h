// Batch normalisation whose training-mode statistics are those of the global batch: every rank's
// per-channel sums are summed over ranks through a models::StatsReducer, so N ranks with batch B
// compute what one process computes with batch N*B, in the forward and in the backward.
//
// The sum over ranks is a differentiable operation (allReduceSum: a custom autograd Function
// whose backward sums the incoming gradient over ranks, itself through allReduceSum, so second
// derivatives, as an R1 penalty needs, work too). The normalisation is written with it in plain
// tensor operations and autograd differentiates the rest: the gradient of the mean and variance
// reaches every rank's inputs through the all-reduced sums of the gradient.
//
// Gradients: rank r's backward gives d(sum over ranks s of L_s)/d(its inputs and parameters).
// Averaged over ranks by the trainer's gradient reducer, that is the single-process gradient of
// mean_s L_s, i.e. of the global batch's mean loss when each L_s is its rank's batch mean.
//
// Collectives: in training mode every forward issues one all-reduce of 2C + 1 doubles, every
// backward through it one more (in reverse layer order; on the thread that runs the backward).
// Every rank must run the same forwards and backwards in the same order.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "models/stats_reducer.h"

namespace tessera::models {

// The elementwise sum of `x` over ranks (a new tensor; every rank calls it with the same shape
// and dtype), differentiable: the gradient of an input is the sum over ranks of the output's
// gradients. `reducer` must outlive any backward pass through the result.
at::Tensor allReduceSum(const at::Tensor& x, StatsReducer& reducer);

struct SyncBatchNormOptions {
  std::int64_t num_features = 0;
  double eps = 1e-5;
  double momentum = 0.1;  // running = (1 - momentum) * running + momentum * batch value
  bool affine = true;
  bool track_running_stats = true;
};

// [B, C, H, W] (or [B, C]). Parameters and buffers as torch::nn::BatchNorm2d: weight (ones),
// bias (zeros), running_mean (zeros), running_var (ones), num_batches_tracked (int64).
//
// Training mode (or no running statistics): mean and biased variance over the global batch from
// the per-channel sums of x and x^2 over ranks, in float64 (the squares taken around each rank's
// own mean, so no precision is lost when the mean is large against the spread); running_var
// takes the unbiased variance (n / (n - 1)), num_batches_tracked counts calls. Eval mode: the
// running statistics.
class SyncBatchNormImpl : public torch::nn::Module {
 public:
  explicit SyncBatchNormImpl(const SyncBatchNormOptions& options);
  at::Tensor forward(const at::Tensor& x);

  // The reducer that sums over ranks (not owned; it must outlive forwards and backwards through
  // this layer). nullptr: a world of one (plain batch normalisation).
  void setStatsReducer(StatsReducer* reducer) { reducer_ = reducer; }
  StatsReducer* statsReducer() const { return reducer_; }

  const SyncBatchNormOptions& options() const { return options_; }
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  const at::Tensor& runningMean() const { return running_mean_; }
  const at::Tensor& runningVar() const { return running_var_; }

 private:
  SyncBatchNormOptions options_;
  StatsReducer* reducer_ = nullptr;
  at::Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
};
TORCH_MODULE(SyncBatchNorm);

}  // namespace tessera::models
