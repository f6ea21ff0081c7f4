// The validated configuration of a training run: YAML files plus overrides, bound once at the
// edge (trainer/) into these plain structs. Field lists double as documentation: `tessera
// train --print-config` and the resolved `config.yaml` show every key with its help text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/config/field_visitor.h"

namespace tessera::trainer {

using config::FieldVisitor;

enum class TaskKind { kVqVae };
enum class DevicePreference { kAuto, kCpu, kCuda };
enum class CacheMode { kAuto, kMemory, kNone };
enum class ShuffleMode { kFull, kBlock };
enum class LoaderFormat { kFloat, kUint8 };
enum class OptimizerKind { kAdam, kAdamW };
enum class LrSchedule { kConstant, kCosine };
enum class Compression { kNone, kBf16, kFp16 };
enum class CodebookInit { kRandom, kEncoder, kKMeans };

struct RunConfig {
  std::string name = "tessera";
  std::int64_t seed = 1234;
  std::int64_t steps = 1000;
  double max_time = 0;  // seconds
  std::int64_t log_every = 50;
  std::int64_t image_every = 0;
  bool eval_at_end = true;
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
  LoaderFormat format = LoaderFormat::kUint8;
  ShuffleMode shuffle = ShuffleMode::kFull;
  std::int64_t shuffle_block = 256;
  void fields(FieldVisitor& v);
};

// The VQ-VAE family of van den Oord et al. 2017 (and `vqvae-fmnist` of docs/benchmarks.md).
struct ModelConfig {
  int in_channels = 1;
  int image_size = 28;
  int hidden = 128;
  int res_hidden = 32;
  int res_blocks = 2;
  int downsample = 2;  // stride-2 stages: the latent grid is image_size / 2^downsample
  void fields(FieldVisitor& v);
};

struct QuantizerConfig {
  int codebook_size = 512;
  int code_dim = 64;
  int lookup_dim = 0;  // 0: look codes up in code_dim; >0: in a projected lower dimension
  bool l2_normalize = false;
  double beta = 0.25;
  double decay = 0.99;
  double eps = 1e-5;
  CodebookInit init = CodebookInit::kKMeans;
  int kmeans_iters = 10;
  double restart_threshold = 0.03;  // fraction of the expected usage N/K below which a code is dead
  std::int64_t restart_every = 100;
  std::int64_t usage_window = 100;
  std::int64_t hash_check_every = 100;
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
  void fields(FieldVisitor& v);
};

struct TrainConfig {
  TaskKind task = TaskKind::kVqVae;
  RunConfig run;
  DataConfig data;
  ModelConfig model;
  QuantizerConfig quantizer;
  OptimConfig optim;
  CommConfig comm;
  CheckpointConfig checkpoint;
  GuardConfig guard;
  MetricsConfig metrics;
  LogConfig log;
  DebugConfig debug;
  void fields(FieldVisitor& v);

  // Checks relations between fields that no single field can (throws ConfigError).
  void validate() const;
};

// Loads `path`, applies `overrides` (`a.b=value`), binds and validates.
TrainConfig loadTrainConfig(const std::string& path, const std::vector<std::string>& overrides);

// Binds a resolved configuration stored as text (e.g. inside a checkpoint); `origin` names it in
// error messages.
TrainConfig parseTrainConfig(const std::string& yaml, const std::string& origin);

// The resolved configuration as YAML (every key, with comments).
std::string toYaml(TrainConfig config);

// Every valid key path, for documentation and tests.
std::vector<std::string> trainConfigKeys();

}  // namespace tessera::trainer
