#include "models/patchgan.h"

#include <torch/torch.h>

#include <algorithm>

#include "core/error.h"

namespace tessera::models {
namespace nn = torch::nn;

DiscriminatorNorm parseDiscriminatorNorm(const std::string& name) {
  if (name == "batch") return DiscriminatorNorm::kSyncBatchNorm;
  if (name == "group") return DiscriminatorNorm::kGroupNorm;
  if (name == "none") return DiscriminatorNorm::kNone;
  throw ConfigError("discriminator norm '" + name + "' is not one of: batch, group, none");
}

PatchGanDiscriminatorImpl::PatchGanDiscriminatorImpl(const PatchGanOptions& o) : options_(o) {
  TORCH_CHECK(o.n_layers >= 1 && o.ndf >= 1 && o.in_channels >= 1,
              "PatchGan: n_layers, ndf and in_channels must be >= 1");
  const bool normed = o.norm != DiscriminatorNorm::kNone;
  main_ = register_module("main", nn::Sequential());
  const auto lrelu = [] { return nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2)); };
  const auto conv = [](std::int64_t in, std::int64_t out, std::int64_t stride, bool bias) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, 4).stride(stride).padding(1).bias(bias));
  };
  const auto addNorm = [&](std::int64_t channels) {
    switch (o.norm) {
      case DiscriminatorNorm::kSyncBatchNorm: {
        SyncBatchNormOptions bo;
        bo.num_features = channels;
        bo.eps = o.eps;
        bo.momentum = o.bn_momentum;
        SyncBatchNorm bn(bo);
        sync_bns_.push_back(bn);
        main_->push_back(bn);
        break;
      }
      case DiscriminatorNorm::kGroupNorm:
        TORCH_CHECK(channels % o.norm_groups == 0, "PatchGan: ", channels,
                    " channels are not divisible by ", o.norm_groups, " groups");
        main_->push_back(nn::GroupNorm(nn::GroupNormOptions(o.norm_groups, channels).eps(o.eps)));
        break;
      case DiscriminatorNorm::kNone:
        break;
    }
  };

  main_->push_back(conv(o.in_channels, o.ndf, 2, true));
  main_->push_back(lrelu());
  std::int64_t mult = 1;
  for (std::int64_t n = 1; n < o.n_layers; ++n) {
    const std::int64_t prev = mult;
    mult = std::min<std::int64_t>(std::int64_t{1} << n, 8);
    main_->push_back(conv(o.ndf * prev, o.ndf * mult, 2, !normed));
    addNorm(o.ndf * mult);
    main_->push_back(lrelu());
  }
  const std::int64_t prev = mult;
  mult = std::min<std::int64_t>(std::int64_t{1} << std::min<std::int64_t>(o.n_layers, 3), 8);
  main_->push_back(conv(o.ndf * prev, o.ndf * mult, 1, !normed));
  addNorm(o.ndf * mult);
  main_->push_back(lrelu());
  main_->push_back(conv(o.ndf * mult, 1, 1, true));

  torch::NoGradGuard no_grad;
  for (const auto& m : main_->modules(/*include_self=*/false)) {
    if (auto* c = m->as<nn::Conv2d>()) {
      c->weight.normal_(0.0, 0.02);
      if (c->bias.defined()) c->bias.zero_();
    } else if (auto* g = m->as<nn::GroupNorm>()) {
      g->weight.normal_(1.0, 0.02);
      g->bias.zero_();
    } else if (auto* b = m->as<SyncBatchNorm>()) {
      b->weight().normal_(1.0, 0.02);
      b->bias().zero_();
    }
  }
}

at::Tensor PatchGanDiscriminatorImpl::forward(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == options_.in_channels,
              "PatchGan: expected images [B, ", options_.in_channels, ", H, W], got ",
              images.sizes());
  return main_->forward(images);
}

void PatchGanDiscriminatorImpl::setStatsReducer(StatsReducer* reducer) {
  for (auto& bn : sync_bns_) bn->setStatsReducer(reducer);
}

std::int64_t PatchGanDiscriminatorImpl::outputSide(const PatchGanOptions& o, std::int64_t side) {
  const auto out = [](std::int64_t s, std::int64_t stride) { return (s + 2 - 4) / stride + 1; };
  for (std::int64_t n = 0; n < o.n_layers; ++n) side = out(side, 2);
  return out(out(side, 1), 1);
}

}  // namespace tessera::models
