#include "trainer/sample_quality.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "comm/local_communicator.h"
#include "core/error.h"
#include "data/image_file.h"
#include "models/fid_inception.h"
#include "models/safetensors_reader.h"
#include "trainer/export/safetensors.h"
#include "trainer/inference.h"

namespace tessera::trainer {
namespace {

// A 64-bit hash over little-endian 64-bit words (SplitMix64's finaliser), as the FID Inception
// fingerprint.
class WordHash {
 public:
  void add(std::uint64_t word) {
    std::uint64_t z = state_ ^ word;
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    state_ = z ^ (z >> 31);
  }
  void add(const void* data, std::size_t bytes) {
    add(static_cast<std::uint64_t>(bytes));
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < bytes; i += 8) {
      std::uint64_t word = 0;
      std::memcpy(&word, p + i, std::min<std::size_t>(8, bytes - i));
      add(word);
    }
  }
  void add(const std::string& text) { add(text.data(), text.size()); }
  std::string hex() const {
    static const char* digits = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 0; i < 16; ++i) out[15 - i] = digits[(state_ >> (4 * i)) & 0xf];
    return out;
  }

 private:
  std::uint64_t state_ = 0;
};

// A checkpoint whose task featurizes (the classifier).
class CheckpointFeatures final : public FeatureNetwork {
 public:
  CheckpointFeatures(const std::string& path, c10::Device device)
      : path_(path),
        task_(loadTask(path, WeightChoice::kDefault, device,
                       std::make_unique<comm::LocalCommunicator>(device))) {
    const data::ImageShape shape = modelImageShape(task_.config);
    const at::Tensor probe = at::zeros({1, shape.channels, shape.height, shape.width});
    if (!task_.task->featurize(probe).first.defined()) {
      throw InputError("--features " + path + ": task '" + task_.task->name() +
                       "' is not a feature network (train one with task: classifier, e.g. "
                       "configs/classifier_fmnist.yaml)");
    }
    WordHash hash;
    hash.add(task_.task->name());
    for (const auto& [name, module] : task_.task->modules()) {
      for (const auto& item : module->named_parameters()) {
        hash.add(name + "/" + item.key());
        const at::Tensor v = item.value().detach().to(torch::kCPU, torch::kFloat).contiguous();
        hash.add(v.data_ptr(), v.nbytes());
      }
      for (const auto& item : module->named_buffers()) {
        hash.add(name + "/" + item.key());
        const at::Tensor v = item.value().detach().cpu().contiguous();
        hash.add(v.data_ptr(), v.nbytes());
      }
    }
    fingerprint_ = hash.hex();
  }
  FeatureOutput featurize(const at::Tensor& images) override {
    auto [features, logits] = task_.task->featurize(images);
    return {features, logits};
  }
  std::string fingerprint() const override { return fingerprint_; }
  std::string description() const override {
    return path_ + " (task " + task_.task->name() + ", step " + std::to_string(task_.step) + ")";
  }
  data::ImageShape imageShape() const override { return modelImageShape(task_.config); }

 private:
  std::string path_;
  LoadedTask task_;
  std::string fingerprint_;
};

class InceptionFeatures final : public FeatureNetwork {
 public:
  InceptionFeatures(const std::string& path, c10::Device device)
      : path_(path), net_(models::FidInception::load(path, device)) {}
  FeatureOutput featurize(const at::Tensor& images) override {
    return {net_.features(images), at::Tensor()};
  }
  std::string fingerprint() const override { return net_.fingerprint(); }
  std::string description() const override { return "inception:" + path_; }
  data::ImageShape imageShape() const override { return {0, 0, 0}; }

 private:
  std::string path_;
  models::FidInception net_;
};

// A hash of a file's bytes.
std::string fileHash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot read '" + path + "'");
  WordHash hash;
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got > 0) hash.add(buffer.data(), got);
  }
  return hash.hex();
}

}  // namespace

std::unique_ptr<FeatureNetwork> FeatureNetwork::open(const std::string& spec, c10::Device device) {
  const std::string prefix = "inception:";
  if (spec.rfind(prefix, 0) == 0) {
    const std::string path = spec.substr(prefix.size());
    if (!std::filesystem::exists(path)) {
      throw InputError("--features " + spec + ": no such file '" + path + "'");
    }
    return std::make_unique<InceptionFeatures>(path, device);
  }
  if (!std::filesystem::exists(spec)) {
    throw InputError("--features " + spec +
                     ": no such checkpoint (give a classifier checkpoint "
                     "or inception:WEIGHTS.safetensors)");
  }
  return std::make_unique<CheckpointFeatures>(spec, device);
}

SetStatistics featurizeFile(FeatureNetwork& net, const data::ImageFile& file, std::int64_t n,
                            std::int64_t pr_images, models::StatsReducer& reducer,
                            const ImageTransform& transform, std::int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const std::int64_t total = n > 0 ? std::min(n, file.size()) : file.size();
  const std::int64_t begin = total * reducer.rank() / reducer.size();
  const std::int64_t end = total * (reducer.rank() + 1) / reducer.size();
  // The feature width and classes, from one image (every rank, so that all agree).
  const FeatureOutput probe = net.featurize(readImages(file, 0, 1));
  const std::int64_t dims = probe.features.size(1);
  const std::int64_t classes = probe.logits.defined() ? probe.logits.size(1) : 0;
  models::FeatureSums sums(dims, classes);
  std::vector<at::Tensor> kept;  // features of global indices < pr_images
  for (std::int64_t start = begin; start < end; start += batch_size) {
    const std::int64_t count = std::min(batch_size, end - start);
    at::Tensor x = readImages(file, start, count);
    if (transform) x = transform(x);
    const FeatureOutput out = net.featurize(x);
    sums.add(out.features,
             classes > 0 ? torch::softmax(out.logits.to(torch::kDouble), 1) : at::Tensor());
    const std::int64_t keep = std::clamp<std::int64_t>(pr_images - start, 0, count);
    if (keep > 0) kept.push_back(out.features.slice(0, 0, keep).to(torch::kFloat));
  }
  sums.reduce(reducer);
  SetStatistics s;
  s.gaussian = sums.gaussian();
  s.inception_score = sums.inceptionScore();
  if (pr_images > 0) {
    const at::Tensor mine =
        kept.empty() ? torch::zeros({0, dims}, torch::kFloat) : at::cat(kept).contiguous();
    s.pr_features = reducer.allGather(mine);
  }
  return s;
}

SetStatistics referenceStatistics(FeatureNetwork& net, const data::ImageFile& file, std::int64_t n,
                                  std::int64_t pr_images, models::StatsReducer& reducer,
                                  bool use_cache) {
  WordHash key;
  key.add(std::string("tessera-reference-stats-1"));
  key.add(net.fingerprint());
  key.add(fileHash(file.path()));
  key.add(file.dataset());
  const std::int64_t total = n > 0 ? std::min(n, file.size()) : file.size();
  key.add(static_cast<std::uint64_t>(total));
  key.add(static_cast<std::uint64_t>(std::min(pr_images, total)));
  const std::string cache = file.path() + ".stats-" + key.hex() + ".safetensors";
  // Rank 0 decides whether the cache is used, so that every rank takes the same path.
  at::Tensor hit = torch::zeros({1}, torch::kLong);
  if (reducer.rank() == 0 && use_cache && std::filesystem::exists(cache)) hit[0] = 1;
  reducer.broadcast(hit, 0);
  if (hit[0].item<std::int64_t>() == 1) {
    const models::SafetensorsContents c = models::readSafetensors(cache);
    std::map<std::string, at::Tensor> t(c.tensors.begin(), c.tensors.end());
    for (const char* name : {"mean", "cov", "count", "pr_features"}) {
      if (t.count(name) == 0) throw InputError(cache + ": no tensor '" + name + "'; delete it");
    }
    SetStatistics s;
    s.gaussian.mean = t["mean"].to(torch::kDouble);
    s.gaussian.cov = t["cov"].to(torch::kDouble);
    s.gaussian.count = t["count"].item<std::int64_t>();
    s.pr_features = t["pr_features"].to(torch::kFloat);
    s.cached = true;
    spdlog::info("reference statistics of {} from {}", file.path(), cache);
    return s;
  }
  SetStatistics s = featurizeFile(net, file, n, pr_images, reducer);
  if (reducer.rank() == 0 && use_cache) {
    try {
      writeSafetensors(
          cache,
          {{"mean", s.gaussian.mean},
           {"cov", s.gaussian.cov},
           {"count", torch::full({1}, s.gaussian.count, torch::kLong)},
           {"pr_features",
            s.pr_features.defined() ? s.pr_features : torch::zeros({0}, torch::kFloat)}},
          {{"features", net.description()},
           {"fingerprint", net.fingerprint()},
           {"reference", file.path()}});
      spdlog::info("cached the reference statistics in {}", cache);
    } catch (const Error& e) {
      spdlog::warn("could not cache the reference statistics: {}", e.what());
    }
  }
  return s;
}

JsonObject reconstructionQuality(FeatureNetwork& net, const data::ImageFile& file, std::int64_t n,
                                 std::int64_t pr_images, models::StatsReducer& reducer,
                                 bool use_cache, const ImageTransform& reconstruct) {
  const SetStatistics ref = referenceStatistics(net, file, n, pr_images, reducer, use_cache);
  const SetStatistics rec = featurizeFile(net, file, n, pr_images, reducer, reconstruct);
  return compareSets(rec, ref, reducer);
}

JsonObject compareSets(const SetStatistics& samples, const SetStatistics& reference,
                       models::StatsReducer& reducer) {
  JsonObject o;
  o.add("fd", models::frechetDistance(samples.gaussian, reference.gaussian));
  if (samples.pr_features.defined() && reference.pr_features.defined() &&
      samples.pr_features.size(0) > 3 && reference.pr_features.size(0) > 3) {
    const models::PrecisionRecall pr =
        models::precisionRecall(reference.pr_features, samples.pr_features, reducer, 3);
    o.add("precision", pr.precision)
        .add("recall", pr.recall)
        .add("pr_images", static_cast<std::int64_t>(samples.pr_features.size(0)))
        .add("pr_k", static_cast<std::int64_t>(3));
  }
  if (samples.inception_score > 0) o.add("inception_score", samples.inception_score);
  o.add("images", samples.gaussian.count).add("reference_images", reference.gaussian.count);
  return o;
}

JsonObject evaluateSamples(const SampleQualityArgs& args, models::StatsReducer& reducer,
                           c10::Device device) {
  const auto started = std::chrono::steady_clock::now();
  std::unique_ptr<FeatureNetwork> net = FeatureNetwork::open(args.features, device);
  const data::ImageShape shape = net->imageShape();
  const data::ImageFile samples = data::ImageFile::open(args.samples, args.dataset, &shape);
  const data::ImageFile reference = data::ImageFile::open(args.reference, args.dataset, &shape);
  const SetStatistics ref =
      referenceStatistics(*net, reference, args.n, args.pr_images, reducer, args.use_cache);
  const SetStatistics gen = featurizeFile(*net, samples, args.n, args.pr_images, reducer);
  JsonObject o = compareSets(gen, ref, reducer);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  o.add("samples", args.samples)
      .add("reference", args.reference)
      .add("features", net->description())
      .add("fingerprint", net->fingerprint())
      .add("reference_cached", ref.cached)
      .add("ranks", static_cast<std::int64_t>(reducer.size()))
      .add("seconds", seconds);
  return o;
}

}  // namespace tessera::trainer
