// Training a VQ-VAE: reconstruction MSE plus commitment loss, gradients averaged over ranks, and
// the EMA codebook updated from statistics summed over the global batch.
#pragma once

#include <c10/core/Device.h>

#include <memory>

#include "models/vqvae.h"
#include "trainer/comm_stats_reducer.h"
#include "trainer/model_updater.h"
#include "trainer/task.h"

namespace tessera::trainer {

struct VqVaeTaskOptions {
  models::VqVaeOptions model;
  UpdaterOptions updater;
  int grad_accum = 1;
  std::int64_t hash_check_every = 100;
  std::uint64_t seed = 0;
  c10::Device device = c10::Device(c10::kCPU);
  std::int64_t image_size = 28;  // of the training images (for FLOP counts)
};

class VqVaeTask final : public Task {
 public:
  VqVaeTask(const VqVaeTaskOptions& options, comm::Communicator& comm);

  std::string name() const override { return "vqvae"; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override;
  StepResult step(const data::Batch& batch, const StepContext& ctx) override;
  void afterStep(std::int64_t step) override;
  void collectState(NamedTensors& tensors,
                    std::map<std::string, std::int64_t>& ints) const override;
  void restoreState(const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, std::int64_t>& ints) override;
  std::vector<std::pair<std::string, double>> values() const override;
  void publishMetrics(TrainingMetrics& metrics) const override;
  double trainingFlopsPerImage() const override;
  std::vector<const comm::ReducerStats*> commStats() const override;
  at::Tensor reconstruct(const at::Tensor& images) override;
  at::Tensor encodeLatents(const at::Tensor& images) override;
  at::Tensor codeVectors() override;
  at::Tensor decodeLatents(const at::Tensor& latents) override;
  JsonObject evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                      std::int64_t batch_size, std::int64_t limit) override;

  models::VqVae& model() { return model_; }
  std::int64_t codebookMismatches() const { return mismatches_; }

 private:
  VqVaeTaskOptions options_;
  models::VqVae model_{nullptr};
  CommStatsReducer stats_;
  Updaters updaters_;
  std::int64_t mismatches_ = 0;
};

// Builds a VQ-VAE whose initial weights are a pure function of `seed` (identical on every rank).
models::VqVae makeVqVae(const models::VqVaeOptions& options, std::uint64_t seed,
                        c10::Device device);

}  // namespace tessera::trainer
