// The VQ-VAE's own configuration sections, `model` and `quantizer` (van den Oord et al. 2017;
// `vqvae-fmnist` of docs/benchmarks.md). Bound only for `task: vqvae`.
#pragma once

#include <cstdint>
#include <memory>

#include "trainer/train_config.h"

namespace tessera::trainer {

enum class CodebookInit { kRandom, kEncoder, kKMeans };

// The image shape comes from the data (data.image_size, data.channels or the file).
struct ModelConfig {
  int hidden = 128;
  int res_hidden = 32;
  int res_blocks = 2;
  int downsample = 2;  // stride-2 stages: the latent grid is image_size / 2^downsample
  void fields(FieldVisitor& v);
};

struct QuantizerConfig {
  int codebook_size = 512;
  int code_dim = 64;
  int lookup_dim = 0;  // 0: look codes up in code_dim; >0: in a projected lower dimension
  bool l2_normalize = false;
  double beta = 0.25;
  double decay = 0.99;
  double eps = 1e-5;
  CodebookInit init = CodebookInit::kKMeans;
  int kmeans_iters = 10;
  double restart_threshold = 0.03;  // fraction of the expected usage N/K below which a code is dead
  std::int64_t restart_every = 100;
  std::int64_t usage_window = 100;
  std::int64_t hash_check_every = 100;
  void fields(FieldVisitor& v);
};

struct VqVaeConfig final : TaskConfig {
  ModelConfig model;
  QuantizerConfig quantizer;

  std::unique_ptr<TaskConfig> clone() const override {
    return std::make_unique<VqVaeConfig>(*this);
  }
  void fields(FieldVisitor& v) override;
  void validate(const TrainConfig& config) const override;
};

}  // namespace tessera::trainer
