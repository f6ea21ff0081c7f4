#include "trainer/train_config.h"

#include "core/error.h"
#include "trainer/config/config_tree.h"
#include "trainer/preemption.h"

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
  v.choice("format", format, {{"uint8", LoaderFormat::kUint8}, {"float", LoaderFormat::kFloat}},
           "what loader threads hand over: the stored uint8 bytes, converted to [-1, 1] on the "
           "training device (a quarter of the bytes to build and copy), or float CHW in [-1, 1]");
  v.choice("shuffle", shuffle, {{"full", ShuffleMode::kFull}, {"block", ShuffleMode::kBlock}},
           "full: a permutation per epoch; block: permute contiguous blocks (large files)");
  v.value("shuffle_block", shuffle_block, atLeast(1), "images per block for `shuffle: block`");
}

void ModelConfig::fields(FieldVisitor& v) {
  v.value("in_channels", in_channels, between(1, 4), "image channels");
  v.value("image_size", image_size, atLeast(4), "image height and width");
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
}

void TrainConfig::fields(FieldVisitor& v) {
  v.choice("task", task, {{"vqvae", TaskKind::kVqVae}}, "what to train");
  v.section("run", run, "the run as a whole");
  v.section("data", data, "datasets and loading");
  v.section("model", model, "the autoencoder");
  v.section("quantizer", quantizer, "the vector quantizer and its EMA codebook");
  v.section("optim", optim, "optimizer and learning-rate schedule");
  v.section("comm", comm, "gradient all-reduce and collective deadlines");
  v.section("checkpoint", checkpoint, "checkpoints (run_dir/checkpoints)");
  v.section("guard", guard, "non-finite loss handling");
  v.section("metrics", metrics, "Prometheus endpoint");
  v.section("log", log, "logging");
  v.section("debug", debug, "fault injection for tests");
}

void TrainConfig::validate() const {
  if (optim.betas.size() != 2) {
    throw ConfigError("optim.betas: expected two values [beta1, beta2], got " +
                      std::to_string(optim.betas.size()));
  }
  if (optim.warmup_steps >= run.steps && optim.warmup_steps > 0) {
    throw ConfigError("optim.warmup_steps (" + std::to_string(optim.warmup_steps) +
                      ") must be smaller than run.steps (" + std::to_string(run.steps) + ")");
  }
  if (optim.min_lr > optim.lr) {
    throw ConfigError("optim.min_lr must not exceed optim.lr");
  }
  const int factor = 1 << model.downsample;
  if (model.image_size % factor != 0) {
    throw ConfigError("model.image_size (" + std::to_string(model.image_size) +
                      ") must be divisible by 2^model.downsample (" + std::to_string(factor) + ")");
  }
  if (quantizer.lookup_dim > quantizer.code_dim) {
    throw ConfigError("quantizer.lookup_dim must not exceed quantizer.code_dim");
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

std::vector<std::string> trainConfigKeys() {
  TrainConfig c;
  return config::listKeys(schemaOf(c));
}

}  // namespace tessera::trainer
