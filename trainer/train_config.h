// The validated configuration of a training run: YAML files plus overrides, bound once at the
// edge (trainer/) into these plain structs. Field lists double as documentation: `tessera
// train --print-config` and the resolved `config.yaml` show every key with its help text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/config/field_visitor.h"

namespace tessera::trainer {

using config::FieldVisitor;

enum class DevicePreference { kAuto, kCpu, kCuda };
enum class CacheMode { kAuto, kMemory, kNone };
enum class ShuffleMode { kFull, kBlock };
enum class LoaderFormat { kFloat, kUint8 };
enum class OptimizerKind { kAdam, kAdamW };
enum class LrSchedule { kConstant, kCosine };
enum class Compression { kNone, kBf16, kFp16 };

struct RunConfig {
  std::string name = "tessera";
  std::int64_t seed = 1234;
  std::int64_t steps = 1000;
  double max_time = 0;  // seconds
  std::int64_t log_every = 50;
  std::int64_t image_every = 0;
  bool eval_at_end = true;
  std::string eval_features;  // a feature network: rFD at the end (sample_quality.h)
  int threads = 0;
  DevicePreference device = DevicePreference::kAuto;
  std::string stop_signals = "TERM,USR1";
  void fields(FieldVisitor& v);
};

struct DataConfig {
  std::string train;
  std::string test;
  std::string dataset = "images";
  int batch_size = 32;
  CacheMode cache = CacheMode::kAuto;
  double cache_max_gb = 4.0;
  int prefetch = 4;
  int workers = 2;
  bool hflip = false;
  int image_size = 0;  // 0: the file's
  int channels = 0;    // 0: the file's
  LoaderFormat format = LoaderFormat::kUint8;
  ShuffleMode shuffle = ShuffleMode::kFull;
  std::int64_t shuffle_block = 256;
  void fields(FieldVisitor& v);
};

struct OptimConfig {
  OptimizerKind name = OptimizerKind::kAdam;
  double lr = 2e-4;
  std::vector<double> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0;
  LrSchedule schedule = LrSchedule::kConstant;
  std::int64_t warmup_steps = 0;
  double min_lr = 0;
  double clip_grad_norm = 0;
  std::vector<double> ema;
  bool ema_warmup = false;
  void fields(FieldVisitor& v);
};

struct CommConfig {
  double bucket_mb = 25;
  double first_bucket_mb = 1;
  Compression compression = Compression::kNone;
  double timeout = 600;  // seconds
  int grad_accum = 1;
  void fields(FieldVisitor& v);
};

struct CheckpointConfig {
  std::int64_t every = 1000;
  int keep_last = 3;
  std::int64_t keep_every = 0;
  bool async = true;
  void fields(FieldVisitor& v);
};

struct GuardConfig {
  int max_skips = 5;
  double rollback_lr_factor = 1.0;
  int max_rollbacks = 3;
  void fields(FieldVisitor& v);
};

struct MetricsConfig {
  int port = 0;
  std::string bind = "127.0.0.1";
  double peak_tflops = 0;  // one device's peak, for model FLOPs utilisation (0: not reported)
  void fields(FieldVisitor& v);
};

struct LogConfig {
  std::string level = "info";
  bool all_ranks = false;
  bool progress = true;
  void fields(FieldVisitor& v);
};

// Switches for fault-injection tests. Never set in real runs.
struct DebugConfig {
  std::int64_t nan_at_step = -1;
  int nan_steps = 0;
  int nan_rank = -1;
  bool dump_indices = false;
  double preview_write_delay = 0;
  double preview_sample_delay = 0;  // seconds added to rank 0's share of sample previews
  void fields(FieldVisitor& v);
};

struct TrainConfig;

// A task's own sections (the VQ-VAE's `model` and `quantizer`), declared by the task beside its
// code (trainer/tasks/) and bound only when `task:` names it.
class TaskConfig {
 public:
  virtual ~TaskConfig() = default;
  virtual std::unique_ptr<TaskConfig> clone() const = 0;
  virtual void fields(FieldVisitor& v) = 0;
  // Relations between fields (throws ConfigError naming the keys).
  virtual void validate(const TrainConfig& config) const {}
};

// A TaskConfig with value semantics (copies clone it).
class TaskSections {
 public:
  TaskSections() = default;
  explicit TaskSections(std::unique_ptr<TaskConfig> p) : p_(std::move(p)) {}
  TaskSections(const TaskSections& o) : p_(o.p_ ? o.p_->clone() : nullptr) {}
  TaskSections& operator=(const TaskSections& o) {
    p_ = o.p_ ? o.p_->clone() : nullptr;
    return *this;
  }
  TaskSections(TaskSections&&) = default;
  TaskSections& operator=(TaskSections&&) = default;
  TaskConfig* get() const { return p_.get(); }

 private:
  std::unique_ptr<TaskConfig> p_;
};

// One optimizer of the task, by the name the task gives it ("model"; "generator" and
// "discriminator").
struct NamedOptimizer {
  std::string name;
  OptimConfig config;
};

struct TrainConfig {
  TrainConfig();  // task "vqvae" with its sections and optimizers at their defaults

  std::string task = "vqvae";  // a registered task (trainer/task_registry.h)
  RunConfig run;
  DataConfig data;
  TaskSections task_sections;  // the task's own sections
  // The task's optimizers. One: configured as `optim.*`; several: `optim.<name>.*`.
  std::vector<NamedOptimizer> optim;
  CommConfig comm;
  CheckpointConfig checkpoint;
  GuardConfig guard;
  MetricsConfig metrics;
  LogConfig log;
  DebugConfig debug;
  void fields(FieldVisitor& v);

  // Checks relations between fields that no single field can (throws ConfigError).
  void validate() const;

  // The optimizer settings named `name` (std::logic_error when the task has no such optimizer).
  const OptimConfig& optimizer(const std::string& name) const;
  // The key prefix of an optimizer's settings: "optim" or "optim.<name>".
  std::string optimizerKey(const std::string& name) const;
  // The sections and optimizers of `task` at their defaults.
  void resetTask();
  // The task's own sections as their concrete type (std::logic_error on a mismatch).
  template <class T>
  const T& taskConfig() const {
    auto* p = dynamic_cast<const T*>(task_sections.get());
    if (p == nullptr) throwWrongTaskConfig();
    return *p;
  }

 private:
  [[noreturn]] void throwWrongTaskConfig() const;
  void bindTask(FieldVisitor& v);
};

// The integers of a list key (ConfigError naming `key` when an entry is not an integer >= `min`).
std::vector<std::int64_t> integerList(const std::vector<double>& values, const char* key,
                                      std::int64_t min);

// Loads `path`, applies `overrides` (`a.b=value`), binds and validates.
TrainConfig loadTrainConfig(const std::string& path, const std::vector<std::string>& overrides);

// Binds a resolved configuration stored as text (e.g. inside a checkpoint); `origin` names it in
// error messages.
TrainConfig parseTrainConfig(const std::string& yaml, const std::string& origin);

// The resolved configuration as YAML (every key, with comments).
std::string toYaml(TrainConfig config);

// Every valid key path of a configuration of `task`, for documentation and tests.
std::vector<std::string> trainConfigKeys(const std::string& task = "vqvae");

}  // namespace tessera::trainer
