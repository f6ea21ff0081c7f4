#include "trainer/latent_space.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "comm/local_communicator.h"
#include "core/error.h"
#include "trainer/inference.h"

namespace tessera::trainer {

namespace {

std::string resolveCheckpoint(const std::string& path, const std::string& setting) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) throw InputError(setting + ": no autoencoder checkpoint given");
  if (!fs::exists(path, ec)) {
    throw InputError(setting + ": '" + path + "' does not exist (a VQ-VAE or VQGAN checkpoint " +
                     "file, or a run's checkpoint directory)");
  }
  if (!fs::is_directory(path, ec)) return path;
  const fs::path latest = fs::path(path) / "latest";
  std::ifstream in(latest);
  std::string name;
  if (!in || !std::getline(in, name) || name.empty()) {
    throw InputError(setting + ": directory '" + path +
                     "' has no 'latest' file naming a checkpoint (is it a run's checkpoints/?)");
  }
  return (fs::path(path) / name).string();
}

}  // namespace

LatentSpace::LatentSpace() = default;
LatentSpace::LatentSpace(LatentSpace&&) noexcept = default;
LatentSpace& LatentSpace::operator=(LatentSpace&&) noexcept = default;
LatentSpace::~LatentSpace() = default;

LatentSpace LatentSpace::open(const std::string& path, WeightChoice weights, c10::Device device,
                              const std::string& setting) {
  LatentSpace s;
  s.checkpoint_ = resolveCheckpoint(path, setting);
  try {
    s.task_ = std::make_unique<LoadedTask>(loadTask(
        s.checkpoint_, weights, device, std::make_unique<comm::LocalCommunicator>(device)));
  } catch (const InputError& e) {
    throw InputError(setting + ": " + e.what());
  }
  Task& task = *s.task_->task;
  s.codes_ = task.codeVectors();
  if (!s.codes_.defined()) {
    throw InputError(setting + ": '" + s.checkpoint_ + "' is a checkpoint of task '" + task.name() +
                     "', which has no quantised latent space (vqvae, vqgan)");
  }
  s.image_ = modelImageShape(s.task_->config);
  const at::Tensor probe =
      task.encodeLatents(torch::zeros({1, s.image_.channels, s.image_.height, s.image_.width}));
  s.latent_ = data::ImageShape{probe.size(2), probe.size(3), probe.size(1)};
  s.lo_ = std::get<0>(s.codes_.min(0)).contiguous();
  s.hi_ = std::get<0>(s.codes_.max(0)).contiguous();
  // A channel every code shares (hi == lo) maps to -1 whatever its scale.
  s.hi_ = torch::where(s.hi_ > s.lo_, s.hi_, s.lo_ + 1);
  return s;
}

std::int64_t LatentSpace::step() const {
  return task_->step;
}
const std::string& LatentSpace::weights() const {
  return task_->weights;
}
std::string LatentSpace::taskName() const {
  return task_->task->name();
}

at::Tensor LatentSpace::encode(const at::Tensor& images) {
  return task_->task->encodeLatents(images);
}

at::Tensor LatentSpace::toUnit(const at::Tensor& latents) const {
  const at::Tensor lo = lo_.view({1, -1, 1, 1}), hi = hi_.view({1, -1, 1, 1});
  return (latents.to(at::kCPU, at::kFloat) - lo) / (hi - lo) * 2 - 1;
}

at::Tensor LatentSpace::fromUnit(const at::Tensor& unit) const {
  const at::Tensor lo = lo_.view({1, -1, 1, 1}), hi = hi_.view({1, -1, 1, 1});
  return (unit.to(at::kCPU, at::kFloat) + 1) * 0.5 * (hi - lo) + lo;
}

at::Tensor LatentSpace::snap(const at::Tensor& latents) const {
  const at::Tensor z = latents.to(at::kCPU, at::kFloat);
  const std::int64_t n = z.size(0), d = z.size(1), h = z.size(2), w = z.size(3);
  const at::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, d});
  const at::Tensor dist =
      flat.pow(2).sum(1, true) - 2 * flat.matmul(codes_.t()) + codes_.pow(2).sum(1).unsqueeze(0);
  const at::Tensor nearest = codes_.index_select(0, dist.argmin(1));
  return nearest.view({n, h, w, d}).permute({0, 3, 1, 2}).contiguous();
}

at::Tensor LatentSpace::decode(const at::Tensor& latents) {
  return task_->task->decodeLatents(latents);
}

}  // namespace tessera::trainer
