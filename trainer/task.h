// What the training loop trains. The loop (trainer/trainer.h) owns data, schedule, agreement,
// checkpoints and reporting; a Task owns its models, optimizers (one ModelUpdater per optimizer:
// a GAN has two) and any per-step sampling state, and knows how to take one step.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
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

// What the loop gives a task for one step.
struct StepContext {
  std::int64_t step = 0;  // 0-based optimizer step
  // Learning rate of each optimizer of the task for this step (after warm-up, schedule and
  // rollbacks), by the optimizer's name.
  std::map<std::string, double> lrs;
  // True when `local_ok` is true on every rank (one small all-reduce). ModelUpdater::update
  // calls it once per optimizer update, after the gradients are reduced; the update is skipped
  // on every rank alike when it returns false.
  std::function<bool(bool local_ok)> agree_finite;

  double lr(const std::string& optimizer) const;  // InputError-free: a missing name is a bug
};

// What became of one optimizer's update in a step.
struct OptimizerOutcome {
  std::string name;
  bool applied = false;  // false: skipped because a loss or gradient was non-finite on some rank
  double grad_norm = 0;  // global L2 norm of the averaged gradients before clipping
  double lr = 0;
};

struct StepResult {
  // This rank's loss terms by name, as 0-dim tensors on the training device (the loop reads
  // them at report time, so a step does not wait for the device to log them). Terms may appear
  // in some steps only (a discriminator after its start step): each is averaged over the steps
  // that had it.
  std::vector<std::pair<std::string, at::Tensor>> losses;
  // One entry per optimizer update taken this step, in order (none: no optimizer ran).
  std::vector<OptimizerOutcome> updates;

  // False when some update of the step was skipped as non-finite.
  bool finite() const;
  // True when some update was applied: the step counts as taken.
  bool advanced() const;
};

// What `tessera sample` asks of a generative task; unset fields keep the checkpoint's `sample`
// configuration.
struct GenerateOptions {
  std::string sampler;  // "" | "ddpm" | "ddim" | "dpm++2m" | "euler" | "heun"
  std::optional<std::int64_t> steps;
  std::optional<double> eta;
  std::optional<double> guidance;
  std::optional<std::uint64_t> seed;
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

  // Generated samples [first, first + count) of the sample set `options` names, as
  // [count, C, H, W] in [-1, 1] on the CPU; sample i depends on (seed, i) only, not on how the
  // set is split. Undefined when the task does not generate (`tessera sample` then answers "not
  // available"). UsageError naming the flag for options the task cannot honour.
  virtual at::Tensor generate(std::int64_t first, std::int64_t count,
                              const GenerateOptions& options) {
    return {};
  }
  // A feature network's penultimate features [N, F] and logits [N, classes] of `images`
  // ([N, C, H, W] in [-1, 1]), float32 on the CPU, in evaluation mode (`tessera eval --features`
  // measures Fréchet distance and precision/recall in them); undefined when the task is not one.
  virtual std::pair<at::Tensor, at::Tensor> featurize(const at::Tensor& images) { return {}; }

  // The latent space of a vector-quantised autoencoder, for latent diffusion (`tessera encode`, a
  // diffusion task's `latent` section). All in evaluation mode, results on the CPU; undefined
  // when the task has no such space.
  // - encodeLatents: the quantised latents z_q of `images` ([N, C, H, W] in [-1, 1]): each
  //   position's code vector, as [N, D, h, w] (the decoder's input);
  // - codeVectors: every code's vector in that space, [K, D];
  // - decodeLatents: images in [-1, 1] from latents [N, D, h, w] (code vectors or not).
  virtual at::Tensor encodeLatents(const at::Tensor& images) { return {}; }
  virtual at::Tensor codeVectors() { return {}; }
  virtual at::Tensor decodeLatents(const at::Tensor& latents) { return {}; }

  // Samples in each training preview grid (0: the task previews no samples) and samples
  // [first, first + count) of the fixed-seed preview set, computed like generate() with the
  // configuration's sampler and the live weights.
  virtual std::int64_t previewSampleCount() const { return 0; }
  virtual at::Tensor previewSamples(std::int64_t first, std::int64_t count) { return {}; }
};

}  // namespace tessera::trainer
