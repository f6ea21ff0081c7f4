#include "trainer/task_factory.h"

#include <functional>
#include <mutex>
#include <stdexcept>

#include "core/error.h"
#include "data/image_file.h"
#include "trainer/config/config_tree.h"
#include "trainer/tasks/classifier_task.h"
#include "trainer/tasks/diffusion_config.h"
#include "trainer/tasks/diffusion_task.h"
#include "trainer/tasks/vqgan_task.h"
#include "trainer/tasks/vqvae_config.h"
#include "trainer/tasks/vqvae_task.h"

namespace tessera::trainer {

models::VqVaeOptions vqvaeOptions(const TrainConfig& config, int in_channels) {
  const VqVaeConfig& c = config.taskConfig<VqVaeConfig>();
  models::VqVaeOptions o;
  o.in_channels = in_channels;
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
  q.seed = static_cast<std::uint64_t>(config.run.seed);
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

UpdaterOptions updaterOptions(const TrainConfig& c, const std::string& optimizer) {
  const OptimConfig& opt = c.optimizer(optimizer);
  UpdaterOptions o;
  o.adam.beta1 = opt.betas.at(0);
  o.adam.beta2 = opt.betas.at(1);
  o.adam.eps = opt.eps;
  o.adam.weight_decay = opt.weight_decay;
  o.adam.decoupled_weight_decay = opt.name == OptimizerKind::kAdamW;
  o.clip_grad_norm = opt.clip_grad_norm;
  o.ema = opt.ema;
  o.ema_warmup = opt.ema_warmup;
  o.reducer = reducerOptions(c.comm);
  o.reducer.caller_scales_loss = true;  // tasks multiply their losses by ModelUpdater::lossScale()
  return o;
}

data::LoaderOptions loaderOptions(const TrainConfig& c, const comm::World& w, bool pin_memory) {
  data::LoaderOptions o;
  o.path = c.data.train;
  o.dataset = c.data.dataset;
  o.expected = dataImageShape(c);
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

data::ImageShape dataImageShape(const TrainConfig& c) {
  return {c.data.image_size, c.data.image_size, c.data.channels};
}

data::ImageShape trainingImageShape(const TrainConfig& c) {
  const data::ImageShape wanted = dataImageShape(c);
  if (wanted.height > 0 && wanted.channels > 0) return wanted;  // the file is checked on use
  if (!c.data.train.empty()) {
    return data::ImageFile::open(c.data.train, c.data.dataset, &wanted).shape();
  }
  if (wanted.height <= 0 || wanted.channels <= 0) {
    throw ConfigError(
        "data.train is empty (random batches): data.image_size and data.channels "
        "must be set");
  }
  return wanted;
}

LrScheduleOptions lrSchedule(const TrainConfig& c, const std::string& optimizer) {
  const OptimConfig& o = c.optimizer(optimizer);
  LrScheduleOptions lr;
  lr.peak = o.lr;
  lr.min = o.min_lr;
  lr.warmup_steps = o.warmup_steps;
  lr.total_steps = c.run.steps;
  lr.cosine = o.schedule == LrSchedule::kCosine;
  return lr;
}

namespace {

std::unique_ptr<Task> makeVqVaeTask(const TrainConfig& c, const TaskEnvironment& env) {
  const VqVaeConfig& own = c.taskConfig<VqVaeConfig>();
  const int factor = 1 << own.model.downsample;
  if (env.image.height % factor != 0 || env.image.width % factor != 0) {
    throw ConfigError("model.downsample: images of " + std::to_string(env.image.height) + "x" +
                      std::to_string(env.image.width) + " are not divisible by 2^" +
                      std::to_string(own.model.downsample) + " = " + std::to_string(factor));
  }
  VqVaeTaskOptions o;
  o.model = vqvaeOptions(c, static_cast<int>(env.image.channels));
  o.updater = updaterOptions(c, "model");
  o.grad_accum = c.comm.grad_accum;
  o.hash_check_every = own.quantizer.hash_check_every;
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  o.device = env.device;
  o.image_size = env.image.height;
  return std::make_unique<VqVaeTask>(o, *env.grads);
}

std::unique_ptr<Task> makeDiffusionTask(const TrainConfig& c, const TaskEnvironment& env) {
  return std::make_unique<DiffusionTask>(diffusionTaskOptions(c, env), *env.grads);
}

struct Registry {
  std::mutex mutex;
  std::vector<TaskRegistration> tasks;
};

// Every built-in task, once. The trainer, the config and the inference commands name none.
Registry& registry() {
  static Registry r{{},
                    {{"vqvae",
                      "VQ-VAE: reconstruction + commitment loss, EMA codebook synchronised "
                      "across ranks",
                      [] { return std::make_unique<VqVaeConfig>(); },
                      {{"model", OptimConfig{}}},
                      makeVqVaeTask},
                     {"diffusion",
                      "diffusion model: DDPM UNet on the Gaussian process or flow matching, "
                      "timesteps and noise keyed by global sample",
                      [] { return std::make_unique<DiffusionConfig>(); },
                      {{"model", OptimConfig{}}},
                      makeDiffusionTask},
                     vqganRegistration(),
                     classifierRegistration()}};
  return r;
}

}  // namespace

void registerTask(TaskRegistration task) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (auto& t : r.tasks) {
    if (t.name == task.name) {
      t = std::move(task);
      return;
    }
  }
  r.tasks.push_back(std::move(task));
}

const TaskRegistration& findTask(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& t : r.tasks) {
    if (t.name == name) return t;
    names.push_back(t.name);
  }
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  const std::string closest = config::closestName(name, names);
  throw ConfigError("task: unknown task '" + name + "'; tasks: " + list +
                    (closest.empty() ? "" : " (did you mean '" + closest + "'?)"));
}

std::vector<std::string> taskNames() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& t : r.tasks) names.push_back(t.name);
  return names;
}

std::unique_ptr<Task> makeTask(const TrainConfig& config, const TaskEnvironment& environment) {
  if (environment.grads == nullptr) throw std::logic_error("makeTask: no gradient communicator");
  return findTask(config.task).make(config, environment);
}

}  // namespace tessera::trainer
