#include "trainer/tasks/diffusion_config.h"

#include <cmath>
#include <sstream>
#include <string>

#include "core/error.h"

namespace tessera::trainer {

using config::atLeast;
using config::between;
using config::greaterThan;
using config::probability;

namespace {

config::Range openUnit() {
  return {0.0, 1.0, true, true};
}

std::string str(std::int64_t v) {
  return std::to_string(v);
}

}  // namespace

void UNetConfig::fields(FieldVisitor& v) {
  v.value("ch", ch, atLeast(4), "base channels (even)");
  v.value("ch_mult", ch_mult, atLeast(1),
          "channel multiplier per resolution level (integers; a level halves the resolution)");
  v.value("num_res_blocks", num_res_blocks, atLeast(1), "residual blocks per level");
  v.value("attn_resolutions", attn_resolutions, atLeast(1),
          "resolutions (in pixels) whose blocks have self-attention ([]: none)");
  v.value("mid_attention", mid_attention, "self-attention in the middle block");
  v.value("num_heads", num_heads, atLeast(1), "attention heads");
  v.value("dropout", dropout, between(0, 0.99), "dropout in residual blocks (keyed per sample)");
  v.value("norm_groups", norm_groups, atLeast(1),
          "GroupNorm groups (divide every level's channels)");
  v.value("norm_eps", norm_eps, greaterThan(0), "GroupNorm epsilon");
  v.value("conv_shortcut", conv_shortcut,
          "3x3 instead of 1x1 convolutions on skips that change channels");
  v.value("num_classes", num_classes, atLeast(0),
          "class-conditional on the data file's labels in [0, num_classes) (0: unconditional)");
  v.value("label_dropout", label_dropout, probability(),
          "probability that a sample's label is replaced by the null class (classifier-free "
          "guidance)");
}

void DiffusionProcessConfig::fields(FieldVisitor& v) {
  v.choice("process", process,
           {{"gaussian", DiffusionProcess::kGaussian}, {"flow", DiffusionProcess::kFlow}},
           "gaussian: DDPM's discrete process; flow: x_t = (1 - t) x_0 + t eps, flow matching");
  v.value("timesteps", timesteps, atLeast(1), "T, steps of the gaussian process");
  v.choice("schedule", schedule,
           {{"linear", BetaScheduleChoice::kLinear}, {"cosine", BetaScheduleChoice::kCosine}},
           "beta schedule of the gaussian process");
  v.value("beta_start", beta_start, openUnit(), "linear schedule: first beta");
  v.value("beta_end", beta_end, openUnit(), "linear schedule: last beta");
  v.choice(
      "prediction", prediction,
      {{"eps", PredictionChoice::kEps}, {"x0", PredictionChoice::kX0}, {"v", PredictionChoice::kV}},
      "what the network predicts (gaussian; flow always predicts the velocity)");
  v.choice("weighting", weighting,
           {{"uniform", WeightingChoice::kUniform}, {"min_snr", WeightingChoice::kMinSnr}},
           "loss weighting over timesteps (gaussian)");
  v.value("min_snr_gamma", min_snr_gamma, greaterThan(0), "gamma of min-SNR weighting");
  v.choice("timestep_sampling", timestep_sampling,
           {{"uniform", TimestepSamplingChoice::kUniform},
            {"stratified", TimestepSamplingChoice::kStratified},
            {"loss_aware", TimestepSamplingChoice::kLossAware}},
           "timestep draws over the global batch: independent, stratified, or loss-aware "
           "importance sampling (gaussian)");
  v.value("loss_aware_history", loss_aware_history, atLeast(1),
          "loss_aware: squared losses kept per timestep");
  v.value("loss_aware_uniform_mix", loss_aware_uniform_mix, probability(),
          "loss_aware: probability mixed in from the uniform distribution");
  v.choice("time_distribution", time_distribution,
           {{"uniform", FlowTimeChoice::kUniform}, {"logit_normal", FlowTimeChoice::kLogitNormal}},
           "flow: distribution of t in [0, 1]");
  v.value("logit_mean", logit_mean, config::any(), "flow, logit_normal: mean of the logit");
  v.value("logit_std", logit_std, greaterThan(0), "flow, logit_normal: std of the logit");
  v.value("time_scale", time_scale, greaterThan(0), "flow: the network sees time_scale * t");
}

void SampleConfig::fields(FieldVisitor& v) {
  v.choice("sampler", sampler,
           {{"auto", SamplerChoice::kAuto},
            {"ancestral", SamplerChoice::kAncestral},
            {"ddim", SamplerChoice::kDdim},
            {"dpm_solver_2m", SamplerChoice::kDpmSolver2M},
            {"euler", SamplerChoice::kEuler},
            {"heun", SamplerChoice::kHeun}},
           "sampler (auto: ddim for gaussian, heun for flow)");
  v.value("steps", steps, atLeast(1), "sampler steps (model evaluations; heun: 2 steps - 1)");
  v.value("n", n, atLeast(1), "images per sample grid");
  v.value("seed", seed, atLeast(0), "noise seed of sample grids");
  v.value("eta", eta, atLeast(0), "ddim: eta (0: deterministic)");
  v.value("guidance", guidance, atLeast(0),
          "classifier-free guidance scale (1: conditional model alone; needs unet.num_classes)");
}

void LatentConfig::fields(FieldVisitor& v) {
  v.value("autoencoder", autoencoder,
          "latent diffusion: the VQ-VAE/VQGAN checkpoint (file, or a run's checkpoint directory) "
          "whose latents data.train holds (tessera encode); empty: diffuse the images");
  v.value("snap", snap, "decode sampled latents after replacing each vector by its nearest code");
  v.choice("weights", weights,
           {{"default", LatentWeightsChoice::kDefault},
            {"ema", LatentWeightsChoice::kEma},
            {"live", LatentWeightsChoice::kLive}},
           "the autoencoder's weights (default: EMA when its run kept one)");
}

void DiffusionConfig::fields(FieldVisitor& v) {
  v.section("unet", unet, "the denoising UNet");
  v.section("diffusion", diffusion, "the diffusion process, its objective and timestep draws");
  v.section("sample", sample, "how the task samples images (sampler, steps, grid size, seed)");
  v.section("latent", latent, "latent diffusion on a frozen VQ autoencoder's latents");
}

void DiffusionConfig::validate(const TrainConfig& c) const {
  const std::vector<std::int64_t> mult = integerList(unet.ch_mult, "unet.ch_mult", 1);
  const std::vector<std::int64_t> attn =
      integerList(unet.attn_resolutions, "unet.attn_resolutions", 1);
  if (mult.empty()) throw ConfigError("unet.ch_mult: needs at least one level");
  if (unet.ch % 2 != 0) throw ConfigError("unet.ch (" + str(unet.ch) + ") must be even");
  for (std::int64_t m : mult) {
    if ((unet.ch * m) % unet.norm_groups != 0) {
      throw ConfigError("unet.norm_groups (" + str(unet.norm_groups) +
                        ") must divide every level's channels (unet.ch x unet.ch_mult: " +
                        str(unet.ch * m) + ")");
    }
    if (!attn.empty() && (unet.ch * m) % unet.num_heads != 0) {
      throw ConfigError("unet.num_heads (" + str(unet.num_heads) +
                        ") must divide every level's channels (" + str(unet.ch * m) + ")");
    }
  }
  const auto levels = static_cast<int>(mult.size());
  if (levels > 8) throw ConfigError("unet.ch_mult: at most 8 levels");
  const std::int64_t factor = std::int64_t{1} << (levels - 1);
  if (c.data.image_size > 0) {
    if (c.data.image_size % factor != 0) {
      throw ConfigError("data.image_size (" + str(c.data.image_size) + ") must be divisible by " +
                        str(factor) + " (2^(levels - 1) for " + str(levels) +
                        " levels of unet.ch_mult)");
    }
    for (std::int64_t r : attn) {
      bool found = false;
      for (int i = 0; i < levels; ++i) found = found || (c.data.image_size >> i) == r;
      if (!found) {
        throw ConfigError("unet.attn_resolutions: " + str(r) +
                          " is not the resolution of any level (data.image_size " +
                          str(c.data.image_size) + " halved per level)");
      }
    }
  }
  const bool flow = diffusion.process == DiffusionProcess::kFlow;
  if (flow) {
    if (diffusion.prediction != PredictionChoice::kEps) {
      throw ConfigError(
          "diffusion.prediction applies to process gaussian (flow predicts the velocity)");
    }
    if (diffusion.weighting != WeightingChoice::kUniform) {
      throw ConfigError("diffusion.weighting: min_snr needs process gaussian");
    }
    if (diffusion.timestep_sampling == TimestepSamplingChoice::kLossAware) {
      throw ConfigError(
          "diffusion.timestep_sampling: loss_aware needs process gaussian (flow: uniform or "
          "stratified)");
    }
  } else {
    if (diffusion.time_distribution != FlowTimeChoice::kUniform) {
      throw ConfigError("diffusion.time_distribution: logit_normal needs process flow");
    }
    if (diffusion.schedule == BetaScheduleChoice::kLinear &&
        diffusion.beta_start > diffusion.beta_end) {
      throw ConfigError("diffusion.beta_start must not exceed diffusion.beta_end");
    }
  }
  const bool gaussian_sampler = sample.sampler == SamplerChoice::kAncestral ||
                                sample.sampler == SamplerChoice::kDdim ||
                                sample.sampler == SamplerChoice::kDpmSolver2M;
  const bool flow_sampler =
      sample.sampler == SamplerChoice::kEuler || sample.sampler == SamplerChoice::kHeun;
  if (flow && gaussian_sampler) {
    throw ConfigError("sample.sampler: process flow samples with euler or heun");
  }
  if (!flow && flow_sampler) {
    throw ConfigError(
        "sample.sampler: process gaussian samples with ancestral, ddim or "
        "dpm_solver_2m");
  }
  if (!flow && sample.steps > diffusion.timesteps) {
    throw ConfigError("sample.steps (" + str(sample.steps) + ") must not exceed " +
                      "diffusion.timesteps (" + str(diffusion.timesteps) + ")");
  }
  if (!latent.autoencoder.empty() && c.data.hflip) {
    throw ConfigError(
        "data.hflip: latent diffusion trains on encoded latents, which are not mirrored like "
        "images (set it false)");
  }
  if (sample.guidance != 1.0 && unet.num_classes == 0) {
    throw ConfigError("sample.guidance needs a class-conditional model (unet.num_classes > 0)");
  }
}

}  // namespace tessera::trainer
