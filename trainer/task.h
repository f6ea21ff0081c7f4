// What the training loop trains. The loop (trainer/trainer.h) owns data, schedule, agreement,
// checkpoints and reporting; a Task owns its models, optimizers (one ModelUpdater per optimizer:
// a GAN has two) and any per-step sampling state, and knows how to take one step.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"

namespace torch::nn {
class Module;
}
namespace tessera::data {
struct Batch;
class ImageFile;
}  // namespace tessera::data
namespace tessera::models {
class StatsReducer;
}
namespace tessera::comm {
struct ReducerStats;
}

namespace tessera::trainer {

class TrainingMetrics;
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct StepContext {
  std::int64_t step = 0;  // 0-based optimizer step
  double lr = 0;          // learning rate of this step (after warm-up/schedule/rollbacks)
  // True when `local_ok` is true on every rank (one small all-reduce). A task calls it once per
  // optimizer it is about to step, after the gradients are reduced, and skips the update (for
  // every rank alike) when it returns false.
  std::function<bool(bool local_ok)> agree_finite;
};

struct StepResult {
  std::vector<std::pair<std::string, double>> losses;  // this rank's loss terms ("loss" first)
  bool applied = true;                                 // false: skipped as non-finite
  double grad_norm = 0;
};

class Task {
 public:
  virtual ~Task() = default;

  // The name the task is registered under (`task:` in configs); stored in checkpoints, where
  // inference commands read it to rebuild the task.
  virtual std::string name() const = 0;

  // Modules whose parameters and buffers are synchronised at start, checkpointed ("model/...",
  // "<name>/..."), and exported, by name.
  virtual std::vector<std::pair<std::string, torch::nn::Module*>> modules() = 0;

  virtual StepResult step(const data::Batch& batch, const StepContext& ctx) = 0;

  // Called after every step on every rank (e.g. periodic cross-rank consistency checks).
  virtual void afterStep(std::int64_t step) {}

  // Optimizer, EMA and sampler state beyond the modules' parameters and buffers.
  virtual void collectState(NamedTensors& tensors,
                            std::map<std::string, std::int64_t>& ints) const = 0;
  virtual void restoreState(const std::map<std::string, at::Tensor>& tensors,
                            const std::map<std::string, std::int64_t>& ints) = 0;

  // Named numbers beyond the losses (codebook health, temperatures, ...), the same on every rank.
  // The trainer shows each in the log line, metrics.jsonl and Prometheus (tessera_task_value)
  // without knowing any name.
  virtual std::vector<std::pair<std::string, double>> values() const { return {}; }
  // Task-specific Prometheus series beyond tessera_task_value (e.g. the codebook gauges).
  virtual void publishMetrics(TrainingMetrics& metrics) const {}
  // Model FLOPs of one training step per image (0: unknown), for FLOP/s and MFU.
  virtual double trainingFlopsPerImage() const { return 0; }

  // Communication statistics of the last step, one entry per gradient reducer.
  virtual std::vector<const comm::ReducerStats*> commStats() const = 0;

  // Quality on a held-out file (its first `limit` images; 0: all), computed on shards and
  // reduced over `reducer`'s ranks (every rank calls it). Returns an empty object when the task
  // has nothing to evaluate (the eval command then answers "not available").
  virtual JsonObject evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                              std::int64_t batch_size, std::int64_t limit = 0) {
    return {};
  }

  // Reconstructions of `images` ([N, C, H, W] in [-1, 1], on any device) in [-1, 1] on the CPU,
  // computed in evaluation mode; undefined when the task does not reconstruct.
  virtual at::Tensor reconstruct(const at::Tensor& images) { return {}; }
};

}  // namespace tessera::trainer
