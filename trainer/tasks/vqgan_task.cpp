#include "trainer/tasks/vqgan_task.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/error.h"
#include "core/keyed_rng.h"
#include "data/batch.h"
#include "data/image_transform.h"
#include "trainer/evaluation.h"
#include "trainer/metrics/training_metrics.h"
#include "trainer/task_factory.h"
#include "trainer/task_registry.h"

namespace tessera::trainer {
namespace {

// Sums of detached terms over micro-batches, each divided by the count.
void addMean(at::Tensor& sum, const at::Tensor& value, int n) {
  const at::Tensor part = value.detach().to(at::kDouble) / n;
  sum = sum.defined() ? sum + part : part;
}

}  // namespace

VqganTask::VqganTask(const VqganTaskOptions& options, comm::Communicator& comm)
    : options_(options), rank_(comm.rank()), stats_(comm, "vqgan"), updaters_(comm) {
  // Initial weights are a pure function of the seed (identical on every rank).
  torch::manual_seed(rngKey(options.seed, RngPurpose::kInit));
  autoencoder_ = models::VqganAutoencoder(options.autoencoder);
  autoencoder_->to(options.device);
  torch::manual_seed(rngKey(options.seed, RngPurpose::kInit, 1));
  discriminator_ = models::PatchGanDiscriminator(options.discriminator);
  discriminator_->to(options.device);
  discriminator_->setStatsReducer(&stats_);
  updaters_.add("generator", *autoencoder_, options.generator);
  updaters_.add("discriminator", *discriminator_, options.discriminator_updater);
  const std::string& lpips_file = options.loss.perceptual_weights;
  if (options.loss.perceptual_weight > 0 && !lpips_file.empty() &&
      std::filesystem::exists(lpips_file)) {
    lpips_ = models::Lpips(lpips_file);
    lpips_->to(options.device);
    lpips_->eval();
  } else if (options.loss.perceptual_weight > 0 && comm.rank() == 0) {
    // The shipped configs name the file where the user is expected to put it; a run without it
    // trains without the term rather than failing (nothing is downloaded at run time).
    spdlog::warn(
        "loss.perceptual_weights {}: training without the perceptual (LPIPS) term; "
        "launch/convert_lpips_weights.py writes the file from VGG16 and LPIPS weights",
        lpips_file.empty() ? std::string("is empty") : "'" + lpips_file + "' does not exist");
  }
}

std::vector<std::pair<std::string, torch::nn::Module*>> VqganTask::modules() {
  return {{"generator", autoencoder_.get()}, {"discriminator", discriminator_.get()}};
}

StepResult VqganTask::step(const data::Batch& batch, const StepContext& ctx) {
  const VqganLossConfig& L = options_.loss;
  const auto rec_kind = models::parseReconstructionLoss(L.reconstruction);
  const auto gan_kind = models::parseGanLoss(L.disc_loss);
  autoencoder_->train();
  discriminator_->train();
  stats_.setStep(ctx.step);
  const at::Tensor x =
      data::modelInput(batch.images.to(options_.device, /*non_blocking=*/true), batch.flips);
  const int n = std::max<int>(1, std::min<int>(options_.grad_accum, static_cast<int>(x.size(0))));
  const auto chunks = x.chunk(n, 0);

  models::QuantizeCall call;
  temperature_ = models::temperatureAt(options_.autoencoder.quantizer.temperature, ctx.step);
  call.temperature = temperature_;
  // Gumbel noise keyed by the global sample index: this rank's slice of the step's global batch
  // starts at rank * B, and micro-batch i at rank * B + (its offset), so the draws do not depend
  // on the number of ranks nor on the micro-batches.
  call.noise_seed = options_.seed;
  call.noise_step = ctx.step;
  const std::int64_t first_sample = rank_ * x.size(0);
  models::Quantizer& quantizer = autoencoder_->quantizer();
  if (!quantizer.initialized()) {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> z;
    for (const auto& c : chunks) z.push_back(autoencoder_->encode(c));
    quantizer.initialize(at::cat(z), stats_);
  }

  const bool adversarial = ctx.step >= L.disc_start && L.disc_factor > 0;
  StepResult result;
  at::Tensor rec_sum, perceptual_sum, quant_sum, gen_sum, counts;
  std::vector<at::Tensor> g_losses(static_cast<std::size_t>(n));
  std::vector<at::Tensor> recon(static_cast<std::size_t>(n));
  at::Tensor lambda = torch::zeros({}, torch::TensorOptions().device(options_.device));
  {
    // One forward serves both updates. The discriminator does not require grad while the
    // generator's loss runs through it.
    Updaters::Frozen frozen(updaters_, "generator");
    std::vector<at::Tensor> nll(static_cast<std::size_t>(n)), gen(static_cast<std::size_t>(n));
    std::int64_t offset = 0;
    for (int i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      const at::Tensor& xi = chunks[k];
      call.first_sample = first_sample + offset;
      offset += xi.size(0);
      const models::VqganOutput out = autoencoder_->forward(xi, call);
      at::Tensor rec = models::reconstructionError(rec_kind, xi, out.reconstruction).mean();
      addMean(rec_sum, rec, n);
      if (lpips_) {
        const at::Tensor p = lpips_(xi, out.reconstruction).mean();
        addMean(perceptual_sum, p, n);
        rec = rec + L.perceptual_weight * p;
      }
      nll[k] = rec;
      addMean(quant_sum, out.quant.loss, n);
      const at::Tensor c = out.quant.counts.detach();
      counts = counts.defined() ? counts + c : c.clone();
      recon[k] = out.reconstruction.detach();
      g_losses[k] = nll[k] + out.quant.loss;
      if (adversarial) {
        gen[k] = models::generatorLoss(gan_kind, discriminator_(out.reconstruction));
        addMean(gen_sum, gen[k], n);
      }
    }
    if (adversarial) {
      // Gradients of both losses with respect to the decoder's last layer, for the global
      // batch: the micro-batches' mean, then the ranks' mean.
      const at::Tensor& w = autoencoder_->lastLayerWeight();
      at::Tensor g_nll, g_gen;
      for (int i = 0; i < n; ++i) {
        const auto k = static_cast<std::size_t>(i);
        const at::Tensor a = torch::autograd::grad({nll[k] / n}, {w}, {}, true)[0];
        const at::Tensor b = torch::autograd::grad({gen[k] / n}, {w}, {}, true)[0];
        g_nll = g_nll.defined() ? g_nll + a : a;
        g_gen = g_gen.defined() ? g_gen + b : b;
      }
      std::vector<at::Tensor> grads{g_nll.contiguous(), g_gen.contiguous()};
      updaters_.average(grads, "adaptive weight", ctx.step);
      lambda = models::adaptiveWeight(grads[0].norm(), grads[1].norm(), L.disc_weight);
      for (int i = 0; i < n; ++i) {
        const auto k = static_cast<std::size_t>(i);
        g_losses[k] = g_losses[k] + lambda * L.disc_factor * gen[k];
      }
    }
  }
  result.updates.push_back(updaters_.update(
      "generator", ctx, n, [&](int i) { return g_losses[static_cast<std::size_t>(i)]; }));
  if (result.updates.back().applied) {
    quantizer.update(stats_, ctx.step);
  } else {
    quantizer.discardPending();
  }
  at::Tensor total = rec_sum + quant_sum;
  if (perceptual_sum.defined()) total = total + L.perceptual_weight * perceptual_sum;
  if (adversarial) total = total + lambda.to(at::kDouble) * L.disc_factor * gen_sum;
  result.losses = {{"loss", total}, {"rec", rec_sum}, {"quant", quant_sum}};
  if (perceptual_sum.defined()) result.losses.emplace_back("perceptual", perceptual_sum);
  const models::CodebookStats health = models::globalCodebookStats(counts, stats_);
  result.losses.emplace_back("codebook_usage", health.usage);
  result.losses.emplace_back("perplexity", health.perplexity);

  if (adversarial) {
    result.losses.emplace_back("gen", gen_sum);
    result.losses.emplace_back("lambda", lambda.detach());
    last_lambda_ = lambda.detach();
    const bool r1 = L.r1_gamma > 0 && ctx.step % L.r1_every == 0;
    at::Tensor disc_sum, real_sum, fake_sum, acc_sum, r1_sum;
    for (int d = 0; d < L.d_steps; ++d) {
      const bool last = d == L.d_steps - 1;
      result.updates.push_back(updaters_.update("discriminator", ctx, n, [&](int i) {
        const auto k = static_cast<std::size_t>(i);
        at::Tensor real = chunks[k];
        if (r1) real = real.detach().requires_grad_(true);
        const at::Tensor logits_real = discriminator_(real);
        const at::Tensor logits_fake = discriminator_(recon[k]);
        at::Tensor loss =
            L.disc_factor * models::discriminatorLoss(gan_kind, logits_real, logits_fake);
        if (r1) {
          // Lazy regularisation: every r1_every steps, weighted by r1_every.
          const at::Tensor penalty = models::r1Penalty(logits_real, real);
          loss = loss + 0.5 * L.r1_gamma * static_cast<double>(L.r1_every) * penalty;
          if (last) addMean(r1_sum, penalty, n);
        }
        if (last) {
          addMean(disc_sum, loss, n);
          addMean(real_sum, logits_real.mean(), n);
          addMean(fake_sum, logits_fake.mean(), n);
          addMean(acc_sum, models::discriminatorAccuracy(logits_real, logits_fake), n);
        }
        return loss;
      }));
    }
    result.losses.emplace_back("disc", disc_sum);
    result.losses.emplace_back("logits_real", real_sum);
    result.losses.emplace_back("logits_fake", fake_sum);
    result.losses.emplace_back("d_accuracy", acc_sum);
    if (r1_sum.defined()) result.losses.emplace_back("r1", r1_sum);
    last_logits_real_ = real_sum;
    last_logits_fake_ = fake_sum;
  }
  return result;
}

void VqganTask::collectState(NamedTensors& tensors,
                             std::map<std::string, std::int64_t>& ints) const {
  updaters_.collectState(tensors, ints);
}

void VqganTask::restoreState(const std::map<std::string, at::Tensor>& tensors,
                             const std::map<std::string, std::int64_t>& ints) {
  updaters_.restoreState(tensors, ints);
}

std::vector<std::pair<std::string, double>> VqganTask::values() const {
  if (options_.autoencoder.quantizer.kind != models::QuantizerKind::kGumbel) return {};
  return {{"temperature", temperature_}};
}

void VqganTask::publishMetrics(TrainingMetrics& metrics) const {
  if (!last_lambda_.defined()) return;
  metrics.gan(last_lambda_.item<double>(), last_logits_real_.item<double>(),
              last_logits_fake_.item<double>());
}

std::vector<const comm::ReducerStats*> VqganTask::commStats() const {
  return updaters_.commStats();
}

at::Tensor VqganTask::reconstruct(const at::Tensor& images) {
  torch::NoGradGuard no_grad;
  autoencoder_->eval();
  const at::Tensor recon =
      autoencoder_->forward(images.to(options_.device)).reconstruction.clamp(-1, 1);
  autoencoder_->train();
  return recon.cpu();
}

at::Tensor VqganTask::encodeLatents(const at::Tensor& images) {
  torch::NoGradGuard no_grad;
  autoencoder_->eval();
  const at::Tensor codes =
      autoencoder_->quantize(autoencoder_->encode(images.to(options_.device))).codes;
  const at::Tensor latents = autoencoder_->quantizer().lookup(codes);
  autoencoder_->train();
  return latents.to(at::kCPU, at::kFloat);
}

at::Tensor VqganTask::codeVectors() {
  torch::NoGradGuard no_grad;
  const std::int64_t k = autoencoder_->quantizer().codebookSize();
  const at::Tensor codes =
      at::arange(k, at::TensorOptions().dtype(at::kLong).device(options_.device)).view({1, k, 1});
  return autoencoder_->quantizer()
      .lookup(codes)[0]
      .select(2, 0)
      .t()
      .to(at::kCPU, at::kFloat)
      .contiguous();
}

at::Tensor VqganTask::decodeLatents(const at::Tensor& latents) {
  torch::NoGradGuard no_grad;
  autoencoder_->eval();
  const at::Tensor images =
      autoencoder_->decode(latents.to(options_.device, at::kFloat)).clamp(-1, 1);
  autoencoder_->train();
  return images.cpu();
}

JsonObject VqganTask::evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                               std::int64_t batch_size, std::int64_t limit) {
  autoencoder_->eval();
  const ReconstructionMetrics m = evaluateReconstructions(
      [&](const at::Tensor& x) {
        const models::VqganOutput out = autoencoder_->forward(x);
        return std::make_pair(out.reconstruction, out.quant.codes);
      },
      autoencoder_->quantizer().codebookSize(), file, options_.device, batch_size, reducer, limit);
  autoencoder_->train();
  return m.toJson();
}

}  // namespace tessera::trainer

namespace tessera::trainer {
namespace {

std::unique_ptr<Task> makeVqganTask(const TrainConfig& c, const TaskEnvironment& env) {
  const VqganConfig& g = c.taskConfig<VqganConfig>();
  VqganTaskOptions o;
  auto& a = o.autoencoder;
  a.in_channels = env.image.channels;
  a.resolution = env.image.height;
  a.ch = g.model.ch;
  a.ch_mult = integerList(g.model.ch_mult, "model.ch_mult", 1);
  a.num_res_blocks = g.model.num_res_blocks;
  a.attn_resolutions = integerList(g.model.attn_resolutions, "model.attn_resolutions", 1);
  a.mid_attention = g.model.mid_attention;
  a.z_channels = g.model.z_channels;
  a.embed_dim = g.model.embed_dim;
  a.dropout = g.model.dropout;
  a.downsample = models::parseVqganDownsampleMode(g.model.downsample);
  a.norm_groups = g.model.norm_groups;
  const std::int64_t factor = std::int64_t{1} << (a.ch_mult.size() - 1);
  if (env.image.height % factor != 0) {
    throw ConfigError("model.ch_mult: " + std::to_string(a.ch_mult.size()) +
                      " levels halve the images " + std::to_string(a.ch_mult.size() - 1) +
                      " times; " + std::to_string(env.image.height) + " is not divisible by " +
                      std::to_string(factor));
  }
  auto& q = a.quantizer;
  q.kind = models::parseQuantizerKind(g.quantizer.kind);
  q.codebook_size = g.quantizer.codebook_size;
  q.beta = g.quantizer.beta;
  q.kl_weight = g.quantizer.kl_weight;
  q.straight_through = g.quantizer.straight_through;
  q.temperature.decay = models::parseTemperatureDecay(g.quantizer.temperature_decay);
  q.temperature.start = g.quantizer.temperature_start;
  q.temperature.end = g.quantizer.temperature_end;
  q.temperature.steps = g.quantizer.temperature_steps;
  q.ema.decay = g.quantizer.decay;
  q.ema.init = g.quantizer.init == "random"    ? models::CodebookInit::kRandom
               : g.quantizer.init == "encoder" ? models::CodebookInit::kEncoder
                                               : models::CodebookInit::kKMeans;
  q.ema.seed = static_cast<std::uint64_t>(c.run.seed);
  auto& d = o.discriminator;
  d.in_channels = env.image.channels;
  d.ndf = g.discriminator.ndf;
  d.n_layers = g.discriminator.n_layers;
  d.norm = models::parseDiscriminatorNorm(g.discriminator.norm);
  d.norm_groups = g.discriminator.norm_groups;
  o.loss = g.loss;
  o.generator = updaterOptions(c, "generator");
  o.discriminator_updater = updaterOptions(c, "discriminator");
  o.grad_accum = c.comm.grad_accum;
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  o.device = env.device;
  return std::make_unique<VqganTask>(o, *env.grads);
}

}  // namespace

TaskRegistration vqganRegistration() {
  OptimConfig adam;
  adam.lr = 2e-4;
  adam.betas = {0.5, 0.9};
  return {"vqgan",
          "VQGAN: autoencoder with a PatchGAN, alternating generator/discriminator updates, "
          "adaptive weight from gradients averaged over ranks",
          [] { return std::make_unique<VqganConfig>(); },
          {{"generator", adam}, {"discriminator", adam}},
          makeVqganTask};
}

}  // namespace tessera::trainer
