#include "trainer/tasks/vqvae_task.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/keyed_rng.h"
#include "data/image_transform.h"
#include "data/loader.h"
#include "trainer/evaluation.h"
#include "trainer/metrics/training_metrics.h"

namespace tessera::trainer {

models::VqVae makeVqVae(const models::VqVaeOptions& options, std::uint64_t seed,
                        c10::Device device) {
  // LibTorch's initialisers draw from the default CPU generator: seed it from the run's key.
  torch::manual_seed(rngKey(seed, RngPurpose::kInit));
  models::VqVaeOptions o = options;
  o.quantizer.seed = seed;
  models::VqVae model(o);
  model->to(device);
  return model;
}

VqVaeTask::VqVaeTask(const VqVaeTaskOptions& options, comm::Communicator& comm)
    : options_(options),
      model_(makeVqVae(options.model, options.seed, options.device)),
      stats_(comm, "codebook[model]"),
      updaters_(comm) {
  updaters_.add("model", *model_, options.updater);
}

std::vector<std::pair<std::string, torch::nn::Module*>> VqVaeTask::modules() {
  return {{"model", model_.get()}};
}

StepResult VqVaeTask::step(const data::Batch& batch, const StepContext& ctx) {
  model_->train();
  stats_.setStep(ctx.step);
  const at::Tensor x =
      data::modelInput(batch.images.to(options_.device, /*non_blocking=*/true), batch.flips);
  const int n = std::max<int>(1, std::min<int>(options_.grad_accum, static_cast<int>(x.size(0))));
  const auto chunks = x.chunk(n, 0);
  auto& vq = model_->quantizer();
  if (!vq->initialized()) {
    // Encoded micro-batch by micro-batch, as the step will: a convolution's result can depend on
    // the batch size it runs with, and this keeps 1 process x N micro-batches bit for bit equal
    // to N ranks.
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> z;
    for (const auto& c : chunks) z.push_back(model_->encode(c));
    vq->initialize(at::cat(z), stats_);
  }

  at::Tensor recon_total, commit_total;
  auto add = [n](at::Tensor& sum, const at::Tensor& v) {
    const at::Tensor part = v.detach() / n;
    sum = sum.defined() ? sum + part : part;
  };
  StepResult result;
  result.updates.push_back(updaters_.update("model", ctx, n, [&](int i) {
    const at::Tensor& xi = chunks[static_cast<std::size_t>(i)];
    const models::VqVaeOutput out = model_->forward(xi);
    const at::Tensor recon = torch::mse_loss(out.reconstruction, xi);
    add(recon_total, recon);
    add(commit_total, out.commitment);
    return recon + out.commitment;
  }));
  result.losses = {
      {"loss", recon_total + commit_total}, {"recon", recon_total}, {"commit", commit_total}};
  if (result.updates.back().applied) {
    vq->update(stats_, ctx.step);
  } else {
    vq->discardPending();
  }
  return result;
}

void VqVaeTask::afterStep(std::int64_t step) {
  const std::int64_t every = options_.hash_check_every;
  if (every <= 0 || (step + 1) % every != 0) return;
  stats_.setStep(step);
  if (!model_->quantizer()->checkReplicated(stats_)) {
    ++mismatches_;
    spdlog::error(
        "codebook buffers differ between ranks at step {} (mismatch #{}): every rank now uses "
        "rank 0's codebook; this is a bug, please report it with this log",
        step, mismatches_);
  }
}

void VqVaeTask::collectState(NamedTensors& tensors,
                             std::map<std::string, std::int64_t>& ints) const {
  updaters_.collectState(tensors, ints);
  ints["codebook/mismatches"] = mismatches_;
}

void VqVaeTask::restoreState(const std::map<std::string, at::Tensor>& tensors,
                             const std::map<std::string, std::int64_t>& ints) {
  updaters_.restoreState(tensors, ints);
  if (auto it = ints.find("codebook/mismatches"); it != ints.end()) mismatches_ = it->second;
}

double VqVaeTask::trainingFlopsPerImage() const {
  return models::vqvaeTrainingFlopsPerImage(options_.model, options_.image_size);
}

std::vector<std::pair<std::string, double>> VqVaeTask::values() const {
  const models::CodebookHealth h = model_->quantizer()->health();
  return {{"codebook_usage", h.usage},
          {"perplexity", h.perplexity},
          {"dead_codes", static_cast<double>(h.dead)},
          {"restarts", static_cast<double>(h.restarts)}};
}

void VqVaeTask::publishMetrics(TrainingMetrics& metrics) const {
  const models::CodebookHealth h = model_->quantizer()->health();
  metrics.codebook("model", h.usage, h.perplexity, h.dead, h.restarts);
}

std::vector<const comm::ReducerStats*> VqVaeTask::commStats() const {
  return updaters_.commStats();
}

at::Tensor VqVaeTask::reconstruct(const at::Tensor& images) {
  torch::NoGradGuard no_grad;
  model_->eval();
  const at::Tensor recon = model_->forward(images.to(options_.device)).reconstruction.clamp(-1, 1);
  model_->train();
  return recon.cpu();
}

at::Tensor VqVaeTask::encodeLatents(const at::Tensor& images) {
  torch::NoGradGuard no_grad;
  model_->eval();
  const at::Tensor codes =
      model_->quantizer()->forward(model_->encode(images.to(options_.device))).codes;
  const at::Tensor latents = model_->quantizer()->lookup(codes);
  model_->train();
  return latents.to(at::kCPU, at::kFloat);
}

at::Tensor VqVaeTask::codeVectors() {
  torch::NoGradGuard no_grad;
  const std::int64_t k = model_->quantizer()->options().codebook_size;
  const at::Tensor codes =
      at::arange(k, at::TensorOptions().dtype(at::kLong).device(options_.device)).view({1, k, 1});
  return model_->quantizer()
      ->lookup(codes)[0]
      .select(2, 0)
      .t()
      .to(at::kCPU, at::kFloat)
      .contiguous();
}

at::Tensor VqVaeTask::decodeLatents(const at::Tensor& latents) {
  torch::NoGradGuard no_grad;
  model_->eval();
  const at::Tensor images = model_->decode(latents.to(options_.device, at::kFloat)).clamp(-1, 1);
  model_->train();
  return images.cpu();
}

JsonObject VqVaeTask::evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                               std::int64_t batch_size, std::int64_t limit) {
  return evaluateVqVae(model_, file, options_.device, batch_size, reducer, limit).toJson();
}

}  // namespace tessera::trainer
