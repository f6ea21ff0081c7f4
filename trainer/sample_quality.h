// Sample quality of an image file against a reference file in a feature space (issue 15):
// Fréchet distance, precision/recall (k = 3) and, with a classifier, an Inception-Score-style
// score. The feature network is a Tessera checkpoint whose task featurizes (task: classifier,
// "FD-fmnist" with configs/classifier_fmnist.yaml) or pytorch-fid's Inception from a weights
// file ("inception:FILE"). Every rank featurizes its share of each file; the statistics are
// reduced in one all-reduce per file. The reference's statistics are cached beside it as
// `<reference>.stats-<key>.safetensors` (key: hash of the feature network, the file's bytes and
// the image counts) and reused while the key matches.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/json.h"
#include "data/image_shape.h"
#include "models/distribution_metrics.h"
#include "models/stats_reducer.h"
#include "trainer/cli.h"

namespace tessera::data {
class ImageFile;
}
namespace tessera::comm {
class MpiSession;
}

namespace tessera::trainer {

// What a feature network makes of a batch of images.
struct FeatureOutput {
  at::Tensor features;  // [N, D] float32 on the CPU
  at::Tensor logits;    // [N, classes] on the CPU; undefined when the network does not classify
};

class FeatureNetwork {
 public:
  // `spec`: a checkpoint path, or "inception:FILE". InputError naming `spec` when it cannot be
  // used (unreadable, or a task that does not featurize).
  static std::unique_ptr<FeatureNetwork> open(const std::string& spec, c10::Device device);
  virtual ~FeatureNetwork() = default;

  virtual FeatureOutput featurize(const at::Tensor& images) = 0;  // [N, C, H, W] in [-1, 1]
  // 16 hex digits naming the network's weights.
  virtual std::string fingerprint() const = 0;
  virtual std::string description() const = 0;
  // Images must have this shape (zeros: any).
  virtual data::ImageShape imageShape() const = 0;
};

struct SetStatistics {
  models::Gaussian gaussian;
  at::Tensor pr_features;      // the first `pr_images` images' features [M, D], every rank
  double inception_score = 0;  // 0 without class probabilities
  bool cached = false;
};

// Images of `file`, optionally transformed (e.g. reconstructed) before featurizing.
using ImageTransform = std::function<at::Tensor(const at::Tensor&)>;

// The statistics of the first `n` images of `file` (0: all), sharded over `reducer`'s ranks.
SetStatistics featurizeFile(FeatureNetwork& net, const data::ImageFile& file, std::int64_t n,
                            std::int64_t pr_images, models::StatsReducer& reducer,
                            const ImageTransform& transform = {}, std::int64_t batch_size = 256);

// The reference's statistics, from the cache when its key matches (and `use_cache`); computed
// and cached (rank 0 writes) otherwise. Every rank calls it.
SetStatistics referenceStatistics(FeatureNetwork& net, const data::ImageFile& file, std::int64_t n,
                                  std::int64_t pr_images, models::StatsReducer& reducer,
                                  bool use_cache);

// fd, precision, recall, images of each, and inception_score when the network classifies.
JsonObject compareSets(const SetStatistics& samples, const SetStatistics& reference,
                       models::StatsReducer& reducer);

// The reconstructions' quality (rFD): `reconstruct` applied to the first `n` images of `file`
// against those images, as compareSets reports it. The reference's statistics come from the cache
// when `use_cache`. Every rank calls it.
JsonObject reconstructionQuality(FeatureNetwork& net, const data::ImageFile& file, std::int64_t n,
                                 std::int64_t pr_images, models::StatsReducer& reducer,
                                 bool use_cache, const ImageTransform& reconstruct);

struct SampleQualityArgs {
  std::string samples;
  std::string reference;
  std::string features;
  std::string dataset = "images";
  std::int64_t n = 0;              // images of each file (0: all)
  std::int64_t pr_images = 10000;  // images of each set for precision/recall (0: none)
  bool use_cache = true;
};

// `tessera eval` (trainer/commands/evaluate.cpp): a checkpoint on a dataset, or (--samples) an
// image file against a reference.
struct EvalArgs : CheckpointArgs {
  std::string samples;    // an image file to judge against --reference
  std::string reference;  // the reference image file
  std::string features;   // a feature-network checkpoint or inception:WEIGHTS
  std::int64_t pr_images = 10000;
  bool no_cache = false;
};
int runEval(const EvalArgs& args, const comm::MpiSession& mpi);

// `tessera eval --samples`: the JSON object (on every rank).
JsonObject evaluateSamples(const SampleQualityArgs& args, models::StatsReducer& reducer,
                           c10::Device device);

}  // namespace tessera::trainer
