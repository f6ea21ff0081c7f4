#include "trainer/tasks/vqgan_config.h"

#include "core/error.h"
#include "models/gan_losses.h"
#include "models/patchgan.h"
#include "models/vqgan_autoencoder.h"
#include "models/vqgan_quantizers.h"

namespace tessera::trainer {

using config::atLeast;
using config::between;
using config::greaterThan;

void VqganModelConfig::fields(FieldVisitor& v) {
  v.value("ch", ch, atLeast(1), "base channels");
  v.value("ch_mult", ch_mult, atLeast(1), "channel multiplier per resolution level");
  v.value("num_res_blocks", num_res_blocks, atLeast(1), "ResNet blocks per level");
  v.value("attn_resolutions", attn_resolutions, atLeast(1),
          "feature-map sides with self-attention");
  v.value("mid_attention", mid_attention, "self-attention between the middle ResNet blocks");
  v.value("z_channels", z_channels, atLeast(1), "encoder output channels");
  v.value("embed_dim", embed_dim, atLeast(1), "code dimension (after quant_conv)");
  v.value("dropout", dropout, between(0, 1), "dropout inside ResNet blocks");
  v.value("downsample", downsample, "conv (stride-2, asymmetric padding) or avgpool");
  v.value("norm_groups", norm_groups, atLeast(1), "GroupNorm groups");
}

void VqganQuantizerConfig::fields(FieldVisitor& v) {
  v.value("kind", kind, "ema (synchronised EMA codebook), codebook (learned by gradient), gumbel");
  v.value("codebook_size", codebook_size, atLeast(2), "number of codes (n_embed)");
  v.value("beta", beta, atLeast(0), "commitment weight (ema, codebook)");
  v.value("kl_weight", kl_weight, atLeast(0), "gumbel: weight of the KL to the uniform prior");
  v.value("straight_through", straight_through,
          "gumbel: hard one-hot assignment with straight-through gradients (false: soft)");
  v.value("temperature_decay", temperature_decay,
          "gumbel temperature schedule: constant, linear, exponential, cosine");
  v.value("temperature_start", temperature_start, greaterThan(0), "gumbel: temperature at step 0");
  v.value("temperature_end", temperature_end, greaterThan(0),
          "gumbel: temperature from temperature_steps on");
  v.value("temperature_steps", temperature_steps, atLeast(0), "gumbel: steps of the anneal");
  v.value("decay", decay, between(0, 1), "ema: decay of the codebook statistics");
  v.value("init", init, "ema: random, encoder or kmeans");
}

void DiscriminatorConfig::fields(FieldVisitor& v) {
  v.value("ndf", ndf, atLeast(1), "PatchGAN base channels");
  v.value("n_layers", n_layers, atLeast(1), "PatchGAN stride-2 layers");
  v.value("norm", norm, "batch (synchronous across ranks), group or none");
  v.value("norm_groups", norm_groups, atLeast(1), "GroupNorm groups (norm: group)");
}

void VqganLossConfig::fields(FieldVisitor& v) {
  v.value("reconstruction", reconstruction, "l1 or l2");
  v.value("perceptual_weight", perceptual_weight, atLeast(0), "weight of the LPIPS term");
  v.value("perceptual_weights", perceptual_weights,
          "LPIPS weights file written by launch/convert_lpips_weights.py (empty: no perceptual "
          "term)");
  v.value("disc_loss", disc_loss, "hinge, vanilla or non_saturating");
  v.value("disc_start", disc_start, atLeast(0),
          "step from which the discriminator trains and "
          "the adversarial term counts");
  v.value("disc_factor", disc_factor, atLeast(0), "factor on both adversarial losses");
  v.value("disc_weight", disc_weight, atLeast(0), "factor on the adaptive weight");
  v.value("d_steps", d_steps, atLeast(1), "discriminator updates per generator update");
  v.value("r1_gamma", r1_gamma, atLeast(0), "R1 penalty gamma on real images (0: off)");
  v.value("r1_every", r1_every, atLeast(1), "steps between R1 penalties (lazy regularisation)");
}

void VqganConfig::fields(FieldVisitor& v) {
  v.section("model", model, "the autoencoder (taming-transformers family)");
  v.section("quantizer", quantizer, "the quantizer");
  v.section("discriminator", discriminator, "the PatchGAN discriminator");
  v.section("loss", loss, "reconstruction, perceptual and adversarial terms");
}

void VqganConfig::validate(const TrainConfig&) const {
  auto named = [](const char* key, auto parse, const std::string& value) {
    try {
      parse(value);
    } catch (const ConfigError& e) {
      throw ConfigError(std::string(key) + ": " + e.what());
    }
  };
  named("model.downsample", models::parseVqganDownsampleMode, model.downsample);
  named("quantizer.kind", models::parseQuantizerKind, quantizer.kind);
  named("quantizer.temperature_decay", models::parseTemperatureDecay, quantizer.temperature_decay);
  named("discriminator.norm", models::parseDiscriminatorNorm, discriminator.norm);
  named("loss.reconstruction", models::parseReconstructionLoss, loss.reconstruction);
  named("loss.disc_loss", models::parseGanLoss, loss.disc_loss);
  if (quantizer.init != "random" && quantizer.init != "encoder" && quantizer.init != "kmeans") {
    throw ConfigError("quantizer.init: expected one of random, encoder, kmeans, got '" +
                      quantizer.init + "'");
  }
  if (model.ch_mult.empty()) throw ConfigError("model.ch_mult: needs at least one level");
  integerList(model.ch_mult, "model.ch_mult", 1);
  integerList(model.attn_resolutions, "model.attn_resolutions", 1);
}

}  // namespace tessera::trainer
