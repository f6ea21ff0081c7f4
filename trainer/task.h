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

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct StepContext {
  std::int64_t step = 0;    // 0-based optimizer step
  double lr = 0;            // learning rate of this step (after warm-up/schedule/rollbacks)
  bool inject_nan = false;  // test-only fault injection: make this rank's loss NaN
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

  // Numbers for logs/metrics beyond the losses (codebook health, ...), same on every rank.
  virtual void describe(JsonObject& line) const {}
  virtual std::vector<std::pair<std::string, double>> health() const { return {}; }
  // Model FLOPs of one training step per image (0: unknown), for FLOP/s and MFU.
  virtual double trainingFlopsPerImage() const { return 0; }

  // Communication statistics of the last step, one entry per gradient reducer.
  virtual std::vector<const comm::ReducerStats*> commStats() const = 0;

  // Quality on a held-out file, computed on shards and reduced over `reducer`'s ranks (every rank
  // calls it). Returns an empty object when the task has nothing to evaluate.
  virtual JsonObject evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                              std::int64_t batch_size) {
    return {};
  }

  // A PNG grid for `images` ([N, C, H, W] in [-1, 1], on any device) at `path` (rank 0 calls).
  virtual void writeImages(const at::Tensor& images, const std::string& path) = 0;
};

}  // namespace tessera::trainer
