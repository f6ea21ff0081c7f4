#include "trainer/tasks/vqvae_config.h"

#include "core/error.h"

namespace tessera::trainer {

using config::atLeast;
using config::between;
using config::greaterThan;

void ModelConfig::fields(FieldVisitor& v) {
  v.value("hidden", hidden, atLeast(1), "channels of the encoder/decoder trunk");
  v.value("res_hidden", res_hidden, atLeast(1), "channels inside residual blocks");
  v.value("res_blocks", res_blocks, atLeast(0), "residual blocks in encoder and decoder");
  v.value("downsample", downsample, between(1, 6), "stride-2 stages (factor 2^downsample)");
}

void QuantizerConfig::fields(FieldVisitor& v) {
  v.value("codebook_size", codebook_size, atLeast(2), "number of codes K");
  v.value("code_dim", code_dim, atLeast(1), "code dimension D (encoder output channels)");
  v.value("lookup_dim", lookup_dim, atLeast(0),
          "nearest-code search in a projected dimension (0: in code_dim)");
  v.value("l2_normalize", l2_normalize, "compare l2-normalised codes (cosine similarity)");
  v.value("beta", beta, atLeast(0), "commitment weight on ||z_e - sg(q)||^2");
  v.value("decay", decay, between(0, 1), "EMA decay of the codebook statistics");
  v.value("eps", eps, greaterThan(0), "Laplace smoothing of code counts");
  v.choice("init", init,
           {{"random", CodebookInit::kRandom},
            {"encoder", CodebookInit::kEncoder},
            {"kmeans", CodebookInit::kKMeans}},
           "codebook initialisation (encoder/kmeans: from the first global batch)");
  v.value("kmeans_iters", kmeans_iters, atLeast(0), "k-means iterations for init: kmeans");
  v.value("restart_threshold", restart_threshold, atLeast(0),
          "restart codes whose EMA usage is below this fraction of the expected usage (0: never)");
  v.value("restart_every", restart_every, atLeast(1), "steps between dead-code restarts");
  v.value("usage_window", usage_window, atLeast(1), "steps over which codebook usage is counted");
  v.value("hash_check_every", hash_check_every, atLeast(0),
          "steps between cross-rank codebook hash checks (0: never)");
}

void VqVaeConfig::fields(FieldVisitor& v) {
  v.section("model", model, "the autoencoder");
  v.section("quantizer", quantizer, "the vector quantizer and its EMA codebook");
}

void VqVaeConfig::validate(const TrainConfig& c) const {
  const int factor = 1 << model.downsample;
  if (c.data.image_size > 0 && c.data.image_size % factor != 0) {
    throw ConfigError("data.image_size (" + std::to_string(c.data.image_size) +
                      ") must be divisible by 2^model.downsample (" + std::to_string(factor) + ")");
  }
  if (quantizer.lookup_dim > quantizer.code_dim) {
    throw ConfigError("quantizer.lookup_dim must not exceed quantizer.code_dim");
  }
}

}  // namespace tessera::trainer
