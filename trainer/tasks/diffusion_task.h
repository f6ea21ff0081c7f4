// Training a diffusion model (issue 14): the DDPM/ADM UNet on the Gaussian process (eps, x0 or v
// objective, uniform or min-SNR weighting) or on the linear-interpolation process (flow
// matching), with every random draw of a step keyed by the global sample index so that N ranks
// with batch B take the step one process with batch N x B takes in N micro-batches:
//
// - rank r's slice of the step's global batch of G = N x B samples is [r B, (r + 1) B);
// - timesteps: TimestepSampler::draw(step, G, r B, (r + 1) B) (uniform, stratified over the global
//   batch, or loss-aware with importance weights), or drawContinuousTimes for flow matching;
// - noise: keyedNormal(..., first = r B, ..., a = step, NoiseStream::kTraining);
// - dropout: UNetDropoutKey{rngKey(seed, kDropout, step), global index of the micro-batch's first
//   sample}; class labels dropped by keyedLabelDropout (seed, step, global index);
// - one Updaters::update("model", ...) over comm.grad_accum micro-batches; after an applied
//   update one all-reduce of per-timestep statistics (sum of losses, of squares, counts) updates
//   the loss-aware sampler and the loss by timestep quartile (flow: a [2, 4] all-reduce of
//   per-quartile sums and counts).
#pragma once

#include <c10/core/Device.h>

#include <array>
#include <memory>

#include "models/diffusion.h"
#include "models/samplers.h"
#include "models/timestep_sampler.h"
#include "models/unet.h"
#include "trainer/comm_stats_reducer.h"
#include "trainer/model_updater.h"
#include "trainer/task.h"
#include "trainer/train_config.h"
#include "trainer/weights.h"

namespace tessera::trainer {

struct TaskEnvironment;
class LatentSpace;

struct DiffusionTaskOptions {
  models::UNetOptions unet;
  bool flow = false;  // the interpolation process (flow matching) instead of the Gaussian one
  models::DiffusionOptions diffusion;
  models::FlowMatchingOptions flow_matching;
  models::TimestepSampling timestep_sampling = models::TimestepSampling::kUniform;
  std::int64_t loss_aware_history = 10;
  double loss_aware_uniform_mix = 0.001;
  double label_dropout = 0.1;
  models::SamplerOptions sampler;  // grids (sample())
  double guidance = 1.0;
  std::int64_t preview_count = 0;  // samples per training preview grid (sample.n)
  double preview_delay = 0;        // debug.preview_sample_delay (tests)
  UpdaterOptions updater;
  int grad_accum = 1;
  std::int64_t log_every = 50;  // window of the loss by timestep quartile
  std::uint64_t seed = 0;
  c10::Device device = c10::Device(c10::kCPU);
  // Latent diffusion (latent.*): the frozen autoencoder, whether sampled latents snap to code
  // vectors before decoding, and the training file whose latent range must be the autoencoder's.
  std::string latent_autoencoder;  // empty: pixel space
  bool latent_snap = true;
  WeightChoice latent_weights = WeightChoice::kDefault;
  std::string train_file;
};

// The options of `task: diffusion` from a validated configuration and the training images
// (ConfigError when the images do not fit the UNet).
DiffusionTaskOptions diffusionTaskOptions(const TrainConfig& config, const TaskEnvironment& env);

class DiffusionTask final : public Task {
 public:
  DiffusionTask(const DiffusionTaskOptions& options, comm::Communicator& comm);
  ~DiffusionTask() override;

  std::string name() const override { return "diffusion"; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override;
  StepResult step(const data::Batch& batch, const StepContext& ctx) override;
  void collectState(NamedTensors& tensors,
                    std::map<std::string, std::int64_t>& ints) const override;
  void restoreState(const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, std::int64_t>& ints) override;
  // loss_q1 .. loss_q4: the mean loss (objective weighting, no importance weights) of the samples
  // whose timestep fell in each quarter of [0, T) (flow: of [0, 1]) over the steps of the current
  // logging window, summed over every rank; with loss-aware sampling also the sampler's weight
  // spread max(p) / min(p).
  std::vector<std::pair<std::string, double>> values() const override;
  double trainingFlopsPerImage() const override;
  std::vector<const comm::ReducerStats*> commStats() const override;
  // A diffusion model does not reconstruct.
  at::Tensor reconstruct(const at::Tensor& images) override { return {}; }

  // Samples [first, first + count) with the configured sampler and the live weights, in
  // evaluation mode, as [count, C, H, W] in [-1, 1] on the CPU (labels cycle through the classes
  // for a class-conditional model); latent diffusion decodes the sampled latents through the
  // frozen autoencoder, so these are its images.
  at::Tensor sample(std::int64_t first, std::int64_t count);
  // `tessera sample`: the same with the options' sampler, steps, eta, guidance and seed in place
  // of the configuration's (UsageError naming --sampler or --steps for one that does not fit the
  // process).
  at::Tensor generate(std::int64_t first, std::int64_t count,
                      const GenerateOptions& options) override;
  // Training previews: sample.n samples of the configuration's sampler and seed.
  std::int64_t previewSampleCount() const override { return preview_count_; }
  at::Tensor previewSamples(std::int64_t first, std::int64_t count) override;

  models::UNet& model() { return model_; }
  const models::TimestepSampler& timestepSampler() const { return sampler_; }

 private:
  at::Tensor sampleWith(std::int64_t first, std::int64_t count,
                        const models::SamplerOptions& sampler, double guidance);
  void openLatentSpace();
  void foldStatistics(const at::Tensor& t, const at::Tensor& per_sample, std::int64_t step);

  DiffusionTaskOptions options_;
  comm::Communicator& comm_;
  models::UNet model_{nullptr};
  models::GaussianDiffusion diffusion_;
  models::FlowMatching flow_;
  models::TimestepSampler sampler_;
  CommStatsReducer stats_;
  Updaters updaters_;
  // Per quartile of the timesteps: loss sums and counts over the logging window.
  std::array<double, 4> window_sum_{}, window_count_{};
  std::int64_t preview_count_ = 0;
  std::unique_ptr<LatentSpace> latent_;  // latent diffusion's frozen autoencoder
};

// Builds a UNet whose initial weights are a pure function of `seed` (identical on every rank).
models::UNet makeUNet(const models::UNetOptions& options, std::uint64_t seed, c10::Device device);

}  // namespace tessera::trainer
