#include "trainer/train_config.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "trainer/config/config_tree.h"
#include "trainer/preemption.h"
#include "trainer/task_registry.h"

namespace tessera::trainer {

using config::atLeast;
using config::between;
using config::greaterThan;
using config::probability;

void RunConfig::fields(FieldVisitor& v) {
  v.value("name", name, "run name; the `job` label of metrics");
  v.value("seed", seed, atLeast(0), "seed of every keyed random draw");
  v.value("steps", steps, atLeast(1), "optimizer steps to train");
  v.value("max_time", max_time, atLeast(0),
          "wall-clock budget in seconds (0: none); ends like a preemption, before a scheduler's "
          "limit");
  v.value("log_every", log_every, atLeast(1), "steps between reduced log lines and metrics.jsonl");
  v.value("image_every", image_every, atLeast(0),
          "steps between PNG grids in the run directory (0: only at the end)");
  v.value("eval_at_end", eval_at_end, "evaluate on data.test after the last step");
  v.value("eval_features", eval_features,
          "feature network for the end-of-run evaluation (a classifier checkpoint or "
          "inception:WEIGHTS): adds the reconstructions' Frechet distance, precision and recall "
          "(empty: none)");
  v.value("threads", threads, atLeast(0), "intra-op threads per rank (0: cores / ranks per node)");
  v.choice("device", device,
           {{"auto", DevicePreference::kAuto},
            {"cpu", DevicePreference::kCpu},
            {"cuda", DevicePreference::kCuda}},
           "where to train");
  v.value("stop_signals", stop_signals,
          "signals that make every rank save and exit with code 75 (comma-separated)");
}

void DataConfig::fields(FieldVisitor& v) {
  v.value("train", train, "HDF5 file with the training images");
  v.value("test", test, "HDF5 file with the evaluation images (optional)");
  v.value("dataset", dataset, "name of the N x H x W x C uint8 dataset in the files");
  v.value("batch_size", batch_size, atLeast(1), "images per rank per step");
  v.choice("cache", cache,
           {{"auto", CacheMode::kAuto}, {"memory", CacheMode::kMemory}, {"none", CacheMode::kNone}},
           "keep the file in memory (auto: when smaller than cache_max_gb)");
  v.value("cache_max_gb", cache_max_gb, atLeast(0), "largest file `cache: auto` keeps in memory");
  v.value("prefetch", prefetch, atLeast(1), "batches prepared ahead of the training thread");
  v.value("workers", workers, atLeast(1), "loader threads per rank");
  v.value("hflip", hflip, "random horizontal flips (keyed by seed, epoch and sample)");
  v.value("image_size", image_size, atLeast(0),
          "image height and width; the files must match (0: take it from data.train)");
  v.value("channels", channels, between(0, 1024),
          "image channels, 1 to 4 (latent files: the latents' channels); the files must match "
          "(0: take them from data.train)");
  v.choice("format", format, {{"uint8", LoaderFormat::kUint8}, {"float", LoaderFormat::kFloat}},
           "what loader threads hand over: the stored uint8 bytes, converted to [-1, 1] on the "
           "training device (a quarter of the bytes to build and copy), or float CHW in [-1, 1]");
  v.choice("shuffle", shuffle, {{"full", ShuffleMode::kFull}, {"block", ShuffleMode::kBlock}},
           "full: a permutation per epoch; block: permute contiguous blocks (large files)");
  v.value("shuffle_block", shuffle_block, atLeast(1), "images per block for `shuffle: block`");
}

void OptimConfig::fields(FieldVisitor& v) {
  v.choice("name", name, {{"adam", OptimizerKind::kAdam}, {"adamw", OptimizerKind::kAdamW}},
           "optimizer");
  v.value("lr", lr, greaterThan(0), "peak learning rate");
  v.value("betas", betas, between(0, 1), "Adam betas [beta1, beta2]");
  v.value("eps", eps, greaterThan(0), "Adam epsilon");
  v.value("weight_decay", weight_decay, atLeast(0), "weight decay");
  v.choice("schedule", schedule,
           {{"constant", LrSchedule::kConstant}, {"cosine", LrSchedule::kCosine}},
           "learning-rate schedule after warm-up");
  v.value("warmup_steps", warmup_steps, atLeast(0), "linear warm-up steps");
  v.value("min_lr", min_lr, atLeast(0), "final learning rate of the cosine schedule");
  v.value("clip_grad_norm", clip_grad_norm, atLeast(0), "clip the global gradient norm (0: off)");
  v.value("ema", ema, between(0, 1), "decays of weight EMAs to keep, e.g. [0.999] (empty: none)");
  v.value("ema_warmup", ema_warmup,
          "EMA warm-up: update u uses decay min(decay, (1 + u) / (10 + u))");
}

void CommConfig::fields(FieldVisitor& v) {
  v.value("bucket_mb", bucket_mb, greaterThan(0), "gradient bucket cap in MiB");
  v.value("first_bucket_mb", first_bucket_mb, greaterThan(0),
          "cap of the first bucket (reduced first, while backward goes on)");
  v.choice(
      "compression", compression,
      {{"none", Compression::kNone}, {"bf16", Compression::kBf16}, {"fp16", Compression::kFp16}},
      "wire format of gradient all-reduces");
  v.value("timeout", timeout, greaterThan(0),
          "seconds a collective may take before the rank reports it and exits");
  v.value("grad_accum", grad_accum, atLeast(1),
          "micro-batches per optimizer step (communication only on the last)");
}

void CheckpointConfig::fields(FieldVisitor& v) {
  v.value("every", every, atLeast(0), "steps between checkpoints (0: only at the end)");
  v.value("keep_last", keep_last, atLeast(1), "newest checkpoints to keep");
  v.value("keep_every", keep_every, atLeast(0),
          "also keep every checkpoint whose step is a multiple");
  v.value("async", async, "write checkpoints in a background thread");
}

void GuardConfig::fields(FieldVisitor& v) {
  v.value("max_skips", max_skips, atLeast(1),
          "consecutive non-finite steps after which the run rolls back to its last checkpoint");
  v.value("rollback_lr_factor", rollback_lr_factor, between(0, 1),
          "multiply the learning rate by this on each rollback");
  v.value("max_rollbacks", max_rollbacks, atLeast(0), "rollbacks before giving up (exit code 5)");
}

void MetricsConfig::fields(FieldVisitor& v) {
  v.value("port", port, between(0, 65535),
          "Prometheus port of local rank 0 (rank r serves port + local_rank; 0: off)");
  v.value("bind", bind, "address the metrics endpoint binds (0.0.0.0 for a cluster's Prometheus)");
  v.value("peak_tflops", peak_tflops, atLeast(0),
          "peak TFLOP/s of one device at the training precision, for model FLOPs utilisation "
          "(0: MFU not reported)");
}

void LogConfig::fields(FieldVisitor& v) {
  v.value("level", level, "trace, debug, info, warn or error");
  v.value("all_ranks", all_ranks, "ranks other than 0 log at `level` too");
  v.value("progress", progress, "progress line on a terminal (plain lines otherwise)");
}

void DebugConfig::fields(FieldVisitor& v) {
  v.value("nan_at_step", nan_at_step, atLeast(-1), "test only: inject a NaN loss at this step");
  v.value("nan_steps", nan_steps, atLeast(0), "test only: for this many steps");
  v.value("nan_rank", nan_rank, atLeast(-1), "test only: on this rank (-1: all)");
  v.value("dump_indices", dump_indices,
          "test only: append each step's dataset indices to run_dir/indices-rank<r>.txt");
  v.value("preview_write_delay", preview_write_delay, atLeast(0),
          "test only: seconds added to every preview PNG write on rank 0");
  v.value("preview_sample_delay", preview_sample_delay, atLeast(0),
          "test only: seconds added to rank 0's share of every sample preview");
}

namespace {

// The sections `optim.<name>` of a task with several optimizers.
struct OptimizerSections {
  std::vector<NamedOptimizer>& optimizers;
  void fields(FieldVisitor& v) {
    for (auto& o : optimizers) v.section(o.name.c_str(), o.config, "one optimizer of the task");
  }
};

}  // namespace

// `task` is bound first; the sections that belong to it are declared only then, so a key of
// another task's section is an unknown key.
void TrainConfig::bindTask(FieldVisitor& v) {
  const std::vector<std::string> names = taskNames();
  int index = -1;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i] == task) index = static_cast<int>(i);
  }
  v.choiceIndex("task", index, names, "what to train");
  if (index < 0) throw std::logic_error("TrainConfig: task '" + task + "' is not registered");
  const std::string chosen = names[static_cast<std::size_t>(index)];
  if (chosen != task) {
    task = chosen;
    resetTask();
  }
}

TrainConfig::TrainConfig() {
  resetTask();
}

void TrainConfig::resetTask() {
  const TaskRegistration& r = findTask(task);
  task_sections = TaskSections(r.sections ? r.sections() : nullptr);
  optim = r.optimizers;
}

void TrainConfig::fields(FieldVisitor& v) {
  bindTask(v);
  v.section("run", run, "the run as a whole");
  v.section("data", data, "datasets and loading");
  if (TaskConfig* own = task_sections.get()) own->fields(v);
  if (optim.size() == 1) {
    v.section("optim", optim.front().config, "optimizer and learning-rate schedule");
  } else if (!optim.empty()) {
    OptimizerSections sections{optim};
    v.section("optim", sections, "the task's optimizers and their learning-rate schedules");
  }
  v.section("comm", comm, "gradient all-reduce and collective deadlines");
  v.section("checkpoint", checkpoint, "checkpoints (run_dir/checkpoints)");
  v.section("guard", guard, "non-finite loss handling");
  v.section("metrics", metrics, "Prometheus endpoint");
  v.section("log", log, "logging");
  v.section("debug", debug, "fault injection for tests");
}

std::string TrainConfig::optimizerKey(const std::string& name) const {
  return optim.size() == 1 ? "optim" : "optim." + name;
}

const OptimConfig& TrainConfig::optimizer(const std::string& name) const {
  for (const auto& o : optim) {
    if (o.name == name) return o.config;
  }
  throw std::logic_error("task '" + task + "' has no optimizer '" + name + "'");
}

void TrainConfig::throwWrongTaskConfig() const {
  throw std::logic_error("the configuration sections of task '" + task +
                         "' are not of the type asked for");
}

void TrainConfig::validate() const {
  for (const auto& [name, o] : optim) {
    const std::string key = optimizerKey(name);
    if (o.betas.size() != 2) {
      throw ConfigError(key + ".betas: expected two values [beta1, beta2], got " +
                        std::to_string(o.betas.size()));
    }
    if (o.warmup_steps >= run.steps && o.warmup_steps > 0) {
      throw ConfigError(key + ".warmup_steps (" + std::to_string(o.warmup_steps) +
                        ") must be smaller than run.steps (" + std::to_string(run.steps) + ")");
    }
    if (o.min_lr > o.lr) throw ConfigError(key + ".min_lr must not exceed " + key + ".lr");
  }
  if (data.batch_size % comm.grad_accum != 0) {
    throw ConfigError("data.batch_size (" + std::to_string(data.batch_size) +
                      ") must be divisible by comm.grad_accum (" + std::to_string(comm.grad_accum) +
                      ")");
  }
  PreemptionMonitor::parseSignals(run.stop_signals, "run.stop_signals");
  if (comm.first_bucket_mb > comm.bucket_mb) {
    throw ConfigError("comm.first_bucket_mb must not exceed comm.bucket_mb");
  }
  if (const TaskConfig* own = task_sections.get()) own->validate(*this);
}

std::vector<std::int64_t> integerList(const std::vector<double>& values, const char* key,
                                      std::int64_t min) {
  std::vector<std::int64_t> out;
  for (double d : values) {
    if (!(std::floor(d) == d) || d < static_cast<double>(min) || d > 1e9) {
      std::ostringstream got;
      got << d;
      throw ConfigError(std::string(key) + ": expected integers >= " + std::to_string(min) +
                        ", got " + got.str());
    }
    out.push_back(static_cast<std::int64_t>(d));
  }
  return out;
}

namespace {
config::Schema schemaOf(TrainConfig& c) {
  return [&c](FieldVisitor& v) { c.fields(v); };
}
}  // namespace

TrainConfig loadTrainConfig(const std::string& path, const std::vector<std::string>& overrides) {
  auto tree = config::ConfigTree::load(path);
  for (const auto& o : overrides) tree.applyOverride(o);
  TrainConfig c;
  tree.bind(schemaOf(c));
  c.validate();
  return c;
}

TrainConfig parseTrainConfig(const std::string& yaml, const std::string& origin) {
  auto tree = config::ConfigTree::parse(yaml, origin);
  TrainConfig c;
  tree.bind(schemaOf(c));
  c.validate();
  return c;
}

std::string toYaml(TrainConfig c) {
  return config::dumpYaml(schemaOf(c));
}

std::vector<std::string> trainConfigKeys(const std::string& task) {
  TrainConfig c;
  c.task = task;
  c.resetTask();
  return config::listKeys(schemaOf(c));
}

}  // namespace tessera::trainer
