#include "models/sync_batch_norm.h"

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace tessera::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

StatsReducer* reducerOf(AutogradContext* ctx) {
  return reinterpret_cast<StatsReducer*>(
      static_cast<std::intptr_t>(ctx->saved_data["reducer"].toInt()));
}

// y = sum over ranks of x; dL/dx = sum over ranks of dL/dy (each rank's y feeds its own loss,
// and every rank's y depends on every rank's x). The backward is again this Function, so the
// gradient is itself differentiable.
class AllReduceSumFunction : public torch::autograd::Function<AllReduceSumFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, StatsReducer* reducer) {
    ctx->saved_data["reducer"] =
        static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(reducer));
    at::Tensor out = x.detach().clone(at::MemoryFormat::Contiguous);
    reducer->sumInPlace(out);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // Undefined gradients are materialised as zeros (the default), so every rank enters the
    // collective.
    return {AllReduceSumFunction::apply(grads[0].contiguous(), reducerOf(ctx)), at::Tensor()};
  }
};

}  // namespace

at::Tensor allReduceSum(const at::Tensor& x, StatsReducer& reducer) {
  return AllReduceSumFunction::apply(x, &reducer);
}

SyncBatchNormImpl::SyncBatchNormImpl(const SyncBatchNormOptions& options) : options_(options) {
  const std::int64_t c = options.num_features;
  TORCH_CHECK(c >= 1, "SyncBatchNorm: num_features must be >= 1");
  if (options.affine) {
    weight_ = register_parameter("weight", torch::ones({c}));
    bias_ = register_parameter("bias", torch::zeros({c}));
  }
  if (options.track_running_stats) {
    running_mean_ = register_buffer("running_mean", torch::zeros({c}));
    running_var_ = register_buffer("running_var", torch::ones({c}));
    num_batches_tracked_ = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
  }
}

at::Tensor SyncBatchNormImpl::forward(const at::Tensor& x) {
  const std::int64_t c = options_.num_features;
  TORCH_CHECK(x.dim() >= 2 && x.size(1) == c, "SyncBatchNorm: expected [B, ", c, ", ...], got ",
              x.sizes());
  std::vector<std::int64_t> shape(static_cast<std::size_t>(x.dim()), 1), dims;
  shape[1] = c;
  for (std::int64_t d = 0; d < x.dim(); ++d) {
    if (d != 1) dims.push_back(d);
  }
  const auto dtype = x.scalar_type();
  const auto affine = [&](const at::Tensor& mean, const at::Tensor& invstd) {
    const at::Tensor scale = options_.affine ? invstd * weight_.to(invstd.scalar_type()) : invstd;
    at::Tensor y = (x - mean.to(dtype).view(shape)) * scale.to(dtype).view(shape);
    return options_.affine ? y + bias_.to(dtype).view(shape) : y;
  };

  const bool track = options_.track_running_stats;
  if (!is_training() && track) {
    return affine(running_mean_, (running_var_ + options_.eps).rsqrt());
  }

  // Per-channel sums of x and x^2 in float64, then their sum over ranks (one collective). The sum
  // of squares is taken around this rank's own mean c (a constant: detached, in x's dtype) and
  // moved to zero in float64: sum x^2 = sum (x - c)^2 + 2 c sum x - n c^2, so the variance below
  // loses nothing to cancellation however far the mean is from zero.
  const auto f64 = x.options().dtype(at::kDouble);
  const double local_n = static_cast<double>(x.numel() / c);
  const at::Tensor count = at::full({1}, local_n, f64);
  const at::Tensor s1 = x.sum(dims, /*keepdim=*/false, at::kDouble);
  const at::Tensor center =
      local_n > 0 ? (s1.detach() / local_n).to(dtype) : at::zeros({c}, x.options());
  const at::Tensor centered = x - center.view(shape);
  const at::Tensor cd = center.to(at::kDouble);
  const at::Tensor s2 = (centered * centered).sum(dims, /*keepdim=*/false, at::kDouble) +
                        2 * cd * s1 - local_n * cd * cd;
  at::Tensor sums = at::cat({s1, s2, count});
  if (reducer_ != nullptr && reducer_->size() > 1) sums = allReduceSum(sums, *reducer_);
  const at::Tensor n = sums.slice(0, 2 * c, 2 * c + 1).detach();
  const at::Tensor mean = sums.slice(0, 0, c) / n;
  const at::Tensor var = (sums.slice(0, c, 2 * c) / n - mean * mean).clamp_min(0);  // biased
  const at::Tensor y = affine(mean, (var + options_.eps).rsqrt());

  if (is_training() && track) {
    torch::NoGradGuard no_grad;
    const double m = options_.momentum;
    const at::Tensor unbiased = var.detach() * n / (n - 1);
    running_mean_.mul_(1 - m).add_(mean.detach().to(running_mean_.scalar_type()), m);
    running_var_.mul_(1 - m).add_(unbiased.to(running_var_.scalar_type()), m);
    num_batches_tracked_.add_(1);
  }
  return y;
}

}  // namespace tessera::models
