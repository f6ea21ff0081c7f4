#include "trainer/task_factory.h"

#include <functional>
#include <stdexcept>

#include "trainer/tasks/vqvae_task.h"

namespace tessera::trainer {

models::VqVaeOptions vqvaeOptions(const TrainConfig& c) {
  models::VqVaeOptions o;
  o.in_channels = c.model.in_channels;
  o.hidden = c.model.hidden;
  o.res_hidden = c.model.res_hidden;
  o.res_blocks = c.model.res_blocks;
  o.downsample = c.model.downsample;
  auto& q = o.quantizer;
  q.codebook_size = c.quantizer.codebook_size;
  q.code_dim = c.quantizer.code_dim;
  q.lookup_dim = c.quantizer.lookup_dim;
  q.l2_normalize = c.quantizer.l2_normalize;
  q.beta = c.quantizer.beta;
  q.decay = c.quantizer.decay;
  q.eps = c.quantizer.eps;
  switch (c.quantizer.init) {
    case CodebookInit::kRandom:
      q.init = models::CodebookInit::kRandom;
      break;
    case CodebookInit::kEncoder:
      q.init = models::CodebookInit::kEncoder;
      break;
    case CodebookInit::kKMeans:
      q.init = models::CodebookInit::kKMeans;
      break;
  }
  q.kmeans_iters = c.quantizer.kmeans_iters;
  q.restart_threshold = c.quantizer.restart_threshold;
  q.restart_every = c.quantizer.restart_every;
  q.usage_window = c.quantizer.usage_window;
  q.seed = static_cast<std::uint64_t>(c.run.seed);
  return o;
}

comm::GradReducerOptions reducerOptions(const CommConfig& c) {
  comm::GradReducerOptions o;
  o.bucket_cap_bytes = static_cast<std::size_t>(c.bucket_mb * 1024 * 1024);
  o.first_bucket_cap_bytes = static_cast<std::size_t>(c.first_bucket_mb * 1024 * 1024);
  switch (c.compression) {
    case Compression::kNone:
      o.wire = comm::WireDtype::kNative;
      break;
    case Compression::kBf16:
      o.wire = comm::WireDtype::kBf16;
      break;
    case Compression::kFp16:
      o.wire = comm::WireDtype::kFp16;
      break;
  }
  return o;
}

UpdaterOptions updaterOptions(const TrainConfig& c) {
  UpdaterOptions o;
  o.adam.beta1 = c.optim.betas.at(0);
  o.adam.beta2 = c.optim.betas.at(1);
  o.adam.eps = c.optim.eps;
  o.adam.weight_decay = c.optim.weight_decay;
  o.adam.decoupled_weight_decay = c.optim.name == OptimizerKind::kAdamW;
  o.clip_grad_norm = c.optim.clip_grad_norm;
  o.ema = c.optim.ema;
  o.reducer = reducerOptions(c.comm);
  o.reducer.caller_scales_loss = true;  // tasks multiply their losses by ModelUpdater::lossScale()
  return o;
}

data::LoaderOptions loaderOptions(const TrainConfig& c, const comm::World& w, bool pin_memory) {
  data::LoaderOptions o;
  o.path = c.data.train;
  o.dataset = c.data.dataset;
  o.expected = {c.model.image_size, c.model.image_size, c.model.in_channels};
  o.batch_size = c.data.batch_size;
  o.rank = w.rank;
  o.world = w.size;
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  o.shuffle.block = c.data.shuffle == ShuffleMode::kBlock;
  o.shuffle.block_size = c.data.shuffle_block;
  o.prefetch = c.data.prefetch;
  o.workers = c.data.workers;
  o.hflip = c.data.hflip;
  o.output = c.data.format == LoaderFormat::kUint8 ? data::LoaderOptions::Output::kUint8
                                                   : data::LoaderOptions::Output::kFloat;
  o.cache = c.data.cache == CacheMode::kMemory ? data::LoaderOptions::Cache::kMemory
            : c.data.cache == CacheMode::kNone ? data::LoaderOptions::Cache::kNone
                                               : data::LoaderOptions::Cache::kAuto;
  o.cache_max_bytes = c.data.cache_max_gb * 1e9;
  o.pin_memory = pin_memory;
  return o;
}

namespace {

using TaskFactory =
    std::function<std::unique_ptr<Task>(const TrainConfig&, c10::Device, comm::Communicator&)>;

struct TaskRegistration {
  TaskKind kind;
  const char* name;
  TaskFactory make;
};

std::unique_ptr<Task> makeVqVaeTask(const TrainConfig& c, c10::Device device,
                                    comm::Communicator& grads) {
  VqVaeTaskOptions o;
  o.model = vqvaeOptions(c);
  o.updater = updaterOptions(c);
  o.grad_accum = c.comm.grad_accum;
  o.hash_check_every = c.quantizer.hash_check_every;
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  o.device = device;
  o.image_size = c.model.image_size;
  return std::make_unique<VqVaeTask>(o, grads);
}

// Every task, once. The trainer and the inference commands name none of them.
const std::vector<TaskRegistration>& registry() {
  static const std::vector<TaskRegistration> tasks{
      {TaskKind::kVqVae, "vqvae", makeVqVaeTask},
  };
  return tasks;
}

}  // namespace

std::unique_ptr<Task> makeTask(const TrainConfig& c, c10::Device device,
                               comm::Communicator& grads) {
  for (const auto& t : registry()) {
    if (t.kind == c.task) return t.make(c, device, grads);
  }
  throw std::logic_error("makeTask: a TaskKind without a registered task");
}

std::vector<std::string> taskNames() {
  std::vector<std::string> names;
  for (const auto& t : registry()) names.emplace_back(t.name);
  return names;
}

}  // namespace tessera::trainer
