// The diffusion task's own configuration sections, `unet`, `diffusion` and `sample` (issue 14).
// Bound only for `task: diffusion`. The enums mirror models/diffusion.h, models/timestep_sampler.h
// and models/samplers.h so that the configuration compiles without LibTorch; the task maps them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/train_config.h"

namespace tessera::trainer {

// The DDPM/ADM UNet (models/unet.h). The image size and channels come from the data.
struct UNetConfig {
  std::int64_t ch = 128;
  std::vector<double> ch_mult{1, 2, 2, 2};  // integers >= 1 (the config's lists hold numbers)
  std::int64_t num_res_blocks = 2;
  std::vector<double> attn_resolutions{16};  // integers: resolutions with attention ([]: none)
  bool mid_attention = true;
  std::int64_t num_heads = 1;
  double dropout = 0.1;
  std::int64_t norm_groups = 32;
  double norm_eps = 1e-6;
  bool conv_shortcut = false;
  std::int64_t num_classes = 0;  // > 0: conditioned on the file's labels
  double label_dropout = 0.1;    // probability of the null label (classifier-free guidance)
  void fields(FieldVisitor& v);
};

enum class DiffusionProcess { kGaussian, kFlow };
enum class BetaScheduleChoice { kLinear, kCosine };
enum class PredictionChoice { kEps, kX0, kV };
enum class WeightingChoice { kUniform, kMinSnr };
enum class TimestepSamplingChoice { kUniform, kStratified, kLossAware };
enum class FlowTimeChoice { kUniform, kLogitNormal };

struct DiffusionProcessConfig {
  DiffusionProcess process = DiffusionProcess::kGaussian;
  std::int64_t timesteps = 1000;
  BetaScheduleChoice schedule = BetaScheduleChoice::kLinear;
  double beta_start = 1e-4;
  double beta_end = 0.02;
  PredictionChoice prediction = PredictionChoice::kEps;
  WeightingChoice weighting = WeightingChoice::kUniform;
  double min_snr_gamma = 5.0;
  TimestepSamplingChoice timestep_sampling = TimestepSamplingChoice::kUniform;
  std::int64_t loss_aware_history = 10;
  double loss_aware_uniform_mix = 0.001;
  FlowTimeChoice time_distribution = FlowTimeChoice::kUniform;
  double logit_mean = 0.0;
  double logit_std = 1.0;
  double time_scale = 1000.0;
  void fields(FieldVisitor& v);
};

enum class SamplerChoice { kAuto, kAncestral, kDdim, kDpmSolver2M, kEuler, kHeun };

struct SampleConfig {
  SamplerChoice sampler = SamplerChoice::kAuto;  // auto: ddim (gaussian), heun (flow)
  std::int64_t steps = 50;
  std::int64_t n = 64;
  std::int64_t seed = 0;
  double eta = 0.0;
  double guidance = 1.0;
  void fields(FieldVisitor& v);
};

enum class LatentWeightsChoice { kDefault, kEma, kLive };

// Latent diffusion: the UNet trains on latents `tessera encode` wrote with this autoencoder, and
// its samples are decoded by it. Empty autoencoder: the UNet works on the images themselves.
struct LatentConfig {
  std::string autoencoder;  // VQ-VAE/VQGAN checkpoint file or run checkpoint directory
  bool snap = true;         // replace each sampled latent vector by its nearest code vector
  LatentWeightsChoice weights = LatentWeightsChoice::kDefault;
  void fields(FieldVisitor& v);
};

struct DiffusionConfig final : TaskConfig {
  UNetConfig unet;
  DiffusionProcessConfig diffusion;
  SampleConfig sample;
  LatentConfig latent;

  std::unique_ptr<TaskConfig> clone() const override {
    return std::make_unique<DiffusionConfig>(*this);
  }
  void fields(FieldVisitor& v) override;
  void validate(const TrainConfig& config) const override;
};

}  // namespace tessera::trainer
