// Training a VQGAN (Esser et al. 2021) with alternating generator and discriminator updates
// across ranks. Per step: one autoencoder forward serves both updates; the adaptive weight
// lambda = ||grad L_rec|| / (||grad L_G|| + 1e-4) on the decoder's last layer comes from
// gradients averaged over ranks, so it is the global batch's value on every rank; then the
// generator update, then `d_steps` discriminator updates on the detached reconstructions.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <optional>

#include "models/gan_losses.h"
#include "models/lpips.h"
#include "models/patchgan.h"
#include "models/vqgan_autoencoder.h"
#include "trainer/comm_stats_reducer.h"
#include "trainer/model_updater.h"
#include "trainer/task.h"
#include "trainer/tasks/vqgan_config.h"

namespace tessera::trainer {

struct VqganTaskOptions {
  models::VqganAutoencoderOptions autoencoder;
  models::PatchGanOptions discriminator;
  VqganLossConfig loss;
  UpdaterOptions generator, discriminator_updater;
  int grad_accum = 1;
  std::uint64_t seed = 0;
  c10::Device device = c10::Device(c10::kCPU);
};

class VqganTask final : public Task {
 public:
  VqganTask(const VqganTaskOptions& options, comm::Communicator& comm);

  std::string name() const override { return "vqgan"; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override;
  StepResult step(const data::Batch& batch, const StepContext& ctx) override;
  void collectState(NamedTensors& tensors,
                    std::map<std::string, std::int64_t>& ints) const override;
  void restoreState(const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, std::int64_t>& ints) override;
  std::vector<std::pair<std::string, double>> values() const override;
  void publishMetrics(TrainingMetrics& metrics) const override;
  std::vector<const comm::ReducerStats*> commStats() const override;
  at::Tensor reconstruct(const at::Tensor& images) override;
  at::Tensor encodeLatents(const at::Tensor& images) override;
  at::Tensor codeVectors() override;
  at::Tensor decodeLatents(const at::Tensor& latents) override;
  JsonObject evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                      std::int64_t batch_size, std::int64_t limit) override;

  models::VqganAutoencoder& autoencoder() { return autoencoder_; }

 private:
  VqganTaskOptions options_;
  int rank_ = 0;
  models::VqganAutoencoder autoencoder_{nullptr};
  models::PatchGanDiscriminator discriminator_{nullptr};
  models::Lpips lpips_{nullptr};  // null without loss.perceptual_weights
  CommStatsReducer stats_;
  Updaters updaters_;
  double temperature_ = 1;
  at::Tensor last_lambda_, last_logits_real_, last_logits_fake_;  // for Prometheus
};

}  // namespace tessera::trainer

namespace tessera::trainer {
struct TaskRegistration;
// `task: vqgan`: its sections, its optimizers ("generator" and "discriminator", Adam with betas
// (0.5, 0.9) by default) and its factory.
TaskRegistration vqganRegistration();
}  // namespace tessera::trainer
