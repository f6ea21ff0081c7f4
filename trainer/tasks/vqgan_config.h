// The VQGAN's own configuration sections (Esser et al. 2021): `model` (the autoencoder),
// `quantizer`, `discriminator` and `loss`. Bound only for `task: vqgan`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/train_config.h"

namespace tessera::trainer {

struct VqganModelConfig {
  int ch = 32;
  std::vector<double> ch_mult{1, 2, 2};
  int num_res_blocks = 1;
  std::vector<double> attn_resolutions{7};
  bool mid_attention = true;
  int z_channels = 64;
  int embed_dim = 64;
  double dropout = 0;
  std::string downsample = "conv";
  int norm_groups = 32;
  void fields(FieldVisitor& v);
};

struct VqganQuantizerConfig {
  std::string kind = "codebook";  // ema | codebook | gumbel
  int codebook_size = 512;
  double beta = 0.25;
  // gumbel
  double kl_weight = 5e-4;
  bool straight_through = true;  // hard assignment (false: soft mixture)
  std::string temperature_decay = "exponential";
  double temperature_start = 1.0;
  double temperature_end = 1.0 / 16;
  std::int64_t temperature_steps = 0;
  // ema
  double decay = 0.99;
  std::string init = "kmeans";
  void fields(FieldVisitor& v);
};

struct DiscriminatorConfig {
  int ndf = 64;
  int n_layers = 3;
  std::string norm = "batch";  // batch (synchronous) | group | none
  int norm_groups = 32;
  void fields(FieldVisitor& v);
};

struct VqganLossConfig {
  std::string reconstruction = "l1";
  double perceptual_weight = 1.0;
  std::string perceptual_weights;  // LPIPS weights file (launch/convert_lpips_weights.py)
  std::string disc_loss = "hinge";
  std::int64_t disc_start = 0;
  double disc_factor = 1.0;
  double disc_weight = 0.8;
  int d_steps = 1;
  double r1_gamma = 0;
  std::int64_t r1_every = 16;
  void fields(FieldVisitor& v);
};

struct VqganConfig final : TaskConfig {
  VqganModelConfig model;
  VqganQuantizerConfig quantizer;
  DiscriminatorConfig discriminator;
  VqganLossConfig loss;

  std::unique_ptr<TaskConfig> clone() const override {
    return std::make_unique<VqganConfig>(*this);
  }
  void fields(FieldVisitor& v) override;
  void validate(const TrainConfig& config) const override;
};

}  // namespace tessera::trainer
