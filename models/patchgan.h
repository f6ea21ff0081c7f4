// The PatchGAN discriminator (Isola et al. 2017, "Image-to-Image Translation with Conditional
// Adversarial Networks"): a stack of 4x4 convolutions whose output is a grid of logits, one per
// overlapping input patch.
//
//   conv k4 s2 p1 (in -> ndf), LeakyReLU(0.2)
//   for n = 1 .. n_layers - 1:  conv k4 s2 p1 (ndf * min(2^(n-1), 8) -> ndf * min(2^n, 8)),
//                               norm, LeakyReLU(0.2)
//   conv k4 s1 p1 (-> ndf * min(2^n_layers, 8)), norm, LeakyReLU(0.2)
//   conv k4 s1 p1 (-> 1)
//
// The convolutions followed by a normalisation have no bias. Initialisation (from the global
// generator, deterministic given torch::manual_seed): conv weights N(0, 0.02), conv biases 0;
// normalisation weights N(1, 0.02), biases 0.
//
// Output side for input side s and n_layers = 3: s/8 - 2 (256 -> 30, 32 -> 2); 28 -> 1
// (28 -> 14 -> 7 -> 3 -> 2 -> 1).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/stats_reducer.h"
#include "models/sync_batch_norm.h"

namespace tessera::models {

enum class DiscriminatorNorm { kSyncBatchNorm, kGroupNorm, kNone };
// "batch" (synchronous BatchNorm), "group", "none"; throws ConfigError otherwise.
DiscriminatorNorm parseDiscriminatorNorm(const std::string& name);

struct PatchGanOptions {
  std::int64_t in_channels = 3;
  std::int64_t ndf = 64;
  std::int64_t n_layers = 3;
  DiscriminatorNorm norm = DiscriminatorNorm::kSyncBatchNorm;
  std::int64_t norm_groups = 32;  // GroupNorm: groups (each normalised width must divide)
  double bn_momentum = 0.1;
  double eps = 1e-5;  // BatchNorm and GroupNorm
};

class PatchGanDiscriminatorImpl : public torch::nn::Module {
 public:
  explicit PatchGanDiscriminatorImpl(const PatchGanOptions& options);

  // images [B, in, H, W] -> logits [B, 1, h, w]
  at::Tensor forward(const at::Tensor& images);

  // Every SyncBatchNorm layer sums its statistics through `reducer` (not owned; nullptr: this
  // rank alone). Call it before training with the trainer's reducer.
  void setStatsReducer(StatsReducer* reducer);
  // The normalisation layers that are SyncBatchNorm (empty for the other choices).
  const std::vector<SyncBatchNorm>& syncBatchNorms() const { return sync_bns_; }
  const PatchGanOptions& options() const { return options_; }

  // Output side for an input side.
  static std::int64_t outputSide(const PatchGanOptions& options, std::int64_t input_side);

 private:
  PatchGanOptions options_;
  torch::nn::Sequential main_{nullptr};
  std::vector<SyncBatchNorm> sync_bns_;
};
TORCH_MODULE(PatchGanDiscriminator);

}  // namespace tessera::models
