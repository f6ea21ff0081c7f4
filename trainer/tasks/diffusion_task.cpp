#include "trainer/tasks/diffusion_task.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "comm/communicator.h"
#include "core/error.h"
#include "core/keyed_rng.h"
#include "data/batch.h"
#include "data/image_file.h"
#include "data/image_transform.h"
#include "trainer/latent_space.h"
#include "trainer/task_factory.h"
#include "trainer/task_registry.h"
#include "trainer/tasks/diffusion_config.h"

namespace tessera::trainer {

namespace {

const char* const kSamplerPrefix = "timestep_sampler/";

std::string str(std::int64_t v) {
  return std::to_string(v);
}

models::SamplerKind samplerKind(SamplerChoice choice, bool flow) {
  switch (choice) {
    case SamplerChoice::kAncestral:
      return models::SamplerKind::kAncestral;
    case SamplerChoice::kDdim:
      return models::SamplerKind::kDdim;
    case SamplerChoice::kDpmSolver2M:
      return models::SamplerKind::kDpmSolver2M;
    case SamplerChoice::kEuler:
      return models::SamplerKind::kEuler;
    case SamplerChoice::kHeun:
      return models::SamplerKind::kHeun;
    case SamplerChoice::kAuto:
      break;
  }
  return flow ? models::SamplerKind::kHeun : models::SamplerKind::kDdim;
}

}  // namespace

DiffusionTaskOptions diffusionTaskOptions(const TrainConfig& c, const TaskEnvironment& env) {
  const DiffusionConfig& own = c.taskConfig<DiffusionConfig>();
  DiffusionTaskOptions o;

  models::UNetOptions& u = o.unet;
  u.in_channels = env.image.channels;
  u.out_channels = 0;
  u.resolution = env.image.height;
  u.ch = own.unet.ch;
  u.ch_mult = integerList(own.unet.ch_mult, "unet.ch_mult", 1);
  u.num_res_blocks = own.unet.num_res_blocks;
  u.attn_resolutions = integerList(own.unet.attn_resolutions, "unet.attn_resolutions", 1);
  u.mid_attention = own.unet.mid_attention;
  u.num_heads = own.unet.num_heads;
  u.dropout = own.unet.dropout;
  u.num_classes = own.unet.num_classes;
  u.norm_groups = own.unet.norm_groups;
  u.norm_eps = own.unet.norm_eps;
  u.conv_shortcut = own.unet.conv_shortcut;
  if (env.image.height != env.image.width) {
    throw ConfigError("task diffusion: the UNet takes square images, data.train has " +
                      str(env.image.height) + "x" + str(env.image.width));
  }
  const auto levels = static_cast<int>(u.ch_mult.size());
  const std::int64_t factor = std::int64_t{1} << (levels - 1);
  if (u.resolution % factor != 0) {
    throw ConfigError("unet.ch_mult: images of " + str(u.resolution) + "x" + str(u.resolution) +
                      " are not divisible by 2^(levels - 1) = " + str(factor));
  }
  for (std::int64_t r : u.attn_resolutions) {
    bool found = false;
    for (int i = 0; i < levels; ++i) found = found || (u.resolution >> i) == r;
    if (!found) {
      throw ConfigError("unet.attn_resolutions: " + str(r) +
                        " is not the resolution of any level (images of " + str(u.resolution) +
                        " halved per level)");
    }
  }

  const DiffusionProcessConfig& d = own.diffusion;
  o.flow = d.process == DiffusionProcess::kFlow;
  o.diffusion.timesteps = d.timesteps;
  o.diffusion.schedule = d.schedule == BetaScheduleChoice::kCosine ? models::BetaSchedule::kCosine
                                                                   : models::BetaSchedule::kLinear;
  o.diffusion.beta_start = d.beta_start;
  o.diffusion.beta_end = d.beta_end;
  o.diffusion.prediction = d.prediction == PredictionChoice::kX0  ? models::Prediction::kX0
                           : d.prediction == PredictionChoice::kV ? models::Prediction::kV
                                                                  : models::Prediction::kEps;
  o.diffusion.weighting = d.weighting == WeightingChoice::kMinSnr ? models::LossWeighting::kMinSnr
                                                                  : models::LossWeighting::kUniform;
  o.diffusion.min_snr_gamma = d.min_snr_gamma;
  o.flow_matching.time_scale = d.time_scale;
  o.flow_matching.time_distribution = d.time_distribution == FlowTimeChoice::kLogitNormal
                                          ? models::FlowTimeDistribution::kLogitNormal
                                          : models::FlowTimeDistribution::kUniform;
  o.flow_matching.logit_mean = d.logit_mean;
  o.flow_matching.logit_std = d.logit_std;
  o.timestep_sampling = d.timestep_sampling == TimestepSamplingChoice::kStratified
                            ? models::TimestepSampling::kStratified
                        : d.timestep_sampling == TimestepSamplingChoice::kLossAware
                            ? models::TimestepSampling::kLossAware
                            : models::TimestepSampling::kUniform;
  o.loss_aware_history = d.loss_aware_history;
  o.loss_aware_uniform_mix = d.loss_aware_uniform_mix;
  o.label_dropout = own.unet.label_dropout;

  o.sampler.kind = samplerKind(own.sample.sampler, o.flow);
  o.sampler.steps = own.sample.steps;
  o.sampler.eta = own.sample.eta;
  o.sampler.seed = static_cast<std::uint64_t>(own.sample.seed);
  o.guidance = own.sample.guidance;
  o.preview_count = own.sample.n;
  o.preview_delay = c.debug.preview_sample_delay;

  o.updater = updaterOptions(c, "model");
  o.grad_accum = c.comm.grad_accum;
  o.log_every = c.run.log_every;
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  o.device = env.device;
  o.latent_autoencoder = own.latent.autoencoder;
  o.latent_snap = own.latent.snap;
  o.latent_weights = own.latent.weights == LatentWeightsChoice::kEma    ? WeightChoice::kEma
                     : own.latent.weights == LatentWeightsChoice::kLive ? WeightChoice::kLive
                                                                        : WeightChoice::kDefault;
  o.train_file = c.data.train;
  return o;
}

models::UNet makeUNet(const models::UNetOptions& options, std::uint64_t seed, c10::Device device) {
  // LibTorch's initialisers draw from the default CPU generator: seed it from the run's key.
  torch::manual_seed(rngKey(seed, RngPurpose::kInit));
  models::UNet model(options);
  model->to(device);
  return model;
}

namespace {

models::TimestepSamplerOptions samplerOptions(const DiffusionTaskOptions& o) {
  models::TimestepSamplerOptions s;
  // Flow matching draws continuous times; the sampler is then only a uniform placeholder.
  s.kind = o.flow ? models::TimestepSampling::kUniform : o.timestep_sampling;
  s.timesteps = o.diffusion.timesteps;
  s.seed = o.seed;
  s.history = o.loss_aware_history;
  s.uniform_mix = o.loss_aware_uniform_mix;
  s.stratified = true;
  return s;
}

}  // namespace

DiffusionTask::DiffusionTask(const DiffusionTaskOptions& options, comm::Communicator& comm)
    : options_(options),
      comm_(comm),
      model_(makeUNet(options.unet, options.seed, options.device)),
      diffusion_(options.diffusion),
      flow_(options.flow_matching),
      sampler_(samplerOptions(options)),
      stats_(comm, "timestep statistics[model]"),
      updaters_(comm),
      preview_count_(options.preview_count) {
  updaters_.add("model", *model_, options.updater);
  if (!options.latent_autoencoder.empty()) {
    openLatentSpace();
  } else if (options.unet.in_channels > 4) {
    throw ConfigError("data.train: images of " + str(options.unet.in_channels) +
                      " channels; a file of latents (tessera encode) needs latent.autoencoder");
  }
}

DiffusionTask::~DiffusionTask() = default;

void DiffusionTask::openLatentSpace() {
  latent_ = std::make_unique<LatentSpace>(LatentSpace::open(
      options_.latent_autoencoder, options_.latent_weights, options_.device, "latent.autoencoder"));
  const data::ImageShape z = latent_->latentShape();
  const models::UNetOptions& u = options_.unet;
  if (u.in_channels != z.channels || u.resolution != z.height || z.height != z.width) {
    throw ConfigError("latent.autoencoder: the latents of " + latent_->checkpoint() + " are " +
                      z.str() + " but data.train holds " + str(u.resolution) + "x" +
                      str(u.resolution) + "x" + str(u.in_channels) +
                      " (write the latents with tessera encode --checkpoint " +
                      latent_->checkpoint() + ")");
  }
  // The training file must hold this autoencoder's latents: its range attributes are the
  // autoencoder's code range (checked where the file is at hand; sampling does not need it).
  std::error_code ec;
  if (options_.train_file.empty() || !std::filesystem::exists(options_.train_file, ec)) return;
  const data::ImageFile file = data::ImageFile::open(options_.train_file);
  const std::vector<double> lo = file.doubleAttribute("tessera_latent_lower");
  const std::vector<double> hi = file.doubleAttribute("tessera_latent_upper");
  if (lo.empty() || hi.empty()) {
    throw ConfigError("data.train: '" + options_.train_file +
                      "' is not a latent file (no tessera_latent_lower/upper attributes): write "
                      "it with tessera encode --checkpoint " +
                      latent_->checkpoint());
  }
  const auto same = [](const std::vector<double>& a, const at::Tensor& b) {
    if (static_cast<std::int64_t>(a.size()) != b.numel()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const double v = b[static_cast<std::int64_t>(i)].item<double>();
      if (std::abs(a[i] - v) > 1e-6 * std::max(1.0, std::abs(v))) return false;
    }
    return true;
  };
  if (!same(lo, latent_->lower()) || !same(hi, latent_->upper())) {
    throw ConfigError("data.train: the latents in '" + options_.train_file + "' were encoded by " +
                      file.stringAttribute("tessera_latent_autoencoder") +
                      ", whose codebook differs from latent.autoencoder's (" +
                      latent_->checkpoint() + "): encode the data again with it");
  }
}

std::vector<std::pair<std::string, torch::nn::Module*>> DiffusionTask::modules() {
  return {{"model", model_.get()}};
}

StepResult DiffusionTask::step(const data::Batch& batch, const StepContext& ctx) {
  model_->train();
  stats_.setStep(ctx.step);
  const at::Tensor x =
      data::modelInput(batch.images.to(options_.device, /*non_blocking=*/true), batch.flips);
  // This rank's slice [begin, begin + b) of the step's global batch of `global` samples: every
  // keyed draw below is a function of the global sample index, so the draws do not depend on
  // the number of ranks (nor on the micro-batches).
  const std::int64_t b = x.size(0);
  const std::int64_t begin = comm_.rank() * b;
  const std::int64_t global = comm_.size() * b;
  const auto step = static_cast<std::uint64_t>(ctx.step);

  at::Tensor t_host, t, importance;
  if (options_.flow) {
    models::ContinuousTimeOptions ct;
    ct.seed = options_.seed;
    ct.stratified = options_.timestep_sampling == models::TimestepSampling::kStratified;
    ct.distribution = options_.flow_matching.time_distribution;
    ct.logit_mean = options_.flow_matching.logit_mean;
    ct.logit_std = options_.flow_matching.logit_std;
    t_host = models::drawContinuousTimes(ct, ctx.step, global, begin, begin + b);
    t = t_host.to(options_.device, x.scalar_type());
  } else {
    const models::TimestepDraw draw = sampler_.draw(ctx.step, global, begin, begin + b);
    t_host = draw.t;
    t = draw.t.to(options_.device);
    if (options_.timestep_sampling == models::TimestepSampling::kLossAware) {
      importance = draw.weights.to(options_.device, x.scalar_type());
    }
  }
  const at::Tensor noise = models::keyedNormal(x.sizes().slice(1), begin, b, options_.seed, step,
                                               models::NoiseStream::kTraining, x.options());
  at::Tensor labels;
  if (options_.unet.num_classes > 0) {
    if (!batch.labels.defined()) {
      throw InputError("unet.num_classes is " + str(options_.unet.num_classes) +
                       " but data.train has no `labels` dataset");
    }
    const at::Tensor l = batch.labels.to(at::kCPU, at::kLong);
    if (l.numel() > 0 && (l.min().item<std::int64_t>() < 0 ||
                          l.max().item<std::int64_t>() >= options_.unet.num_classes)) {
      throw InputError("data.train has labels outside [0, unet.num_classes = " +
                       str(options_.unet.num_classes) + ")");
    }
    labels = models::keyedLabelDropout(l.to(options_.device), options_.label_dropout,
                                       options_.unet.nullLabel(), options_.seed, ctx.step, begin);
  }
  const std::uint64_t dropout_key = rngKey(options_.seed, RngPurpose::kDropout, step);

  // Micro-batches as the VQ-VAE takes them (x.chunk): 1 process x n micro-batches equals n ranks.
  const int n = std::max<int>(1, std::min<int>(options_.grad_accum, static_cast<int>(b)));
  const auto xs = x.chunk(n, 0);
  std::vector<std::int64_t> offsets;
  std::int64_t offset = 0;
  for (const auto& c : xs) {
    offsets.push_back(offset);
    offset += c.size(0);
  }
  auto part = [&](const at::Tensor& v, int i) {
    return v.defined() ? v.narrow(0, offsets[static_cast<std::size_t>(i)],
                                  xs[static_cast<std::size_t>(i)].size(0))
                       : v;
  };

  std::vector<at::Tensor> per_sample(static_cast<std::size_t>(n));
  at::Tensor loss_total;
  StepResult result;
  result.updates.push_back(updaters_.update("model", ctx, n, [&](int i) {
    const at::Tensor& xi = xs[static_cast<std::size_t>(i)];
    const at::Tensor ti = part(t, i), ni = part(noise, i), wi = part(importance, i),
                     li = part(labels, i);
    const models::UNetDropoutKey key{dropout_key, begin + offsets[static_cast<std::size_t>(i)]};
    models::DiffusionLoss l;
    if (options_.flow) {
      const at::Tensor out =
          model_->forward(flow_.interpolate(xi, ni, ti), flow_.modelTime(ti), li, key);
      l = flow_.loss(out, xi, ni, wi);
    } else {
      const at::Tensor out = model_->forward(diffusion_.qSample(xi, ti, ni), ti, li, key);
      l = diffusion_.loss(out, xi, ni, ti, wi);
    }
    per_sample[static_cast<std::size_t>(i)] = l.per_sample.detach();
    const at::Tensor share = l.loss.detach() / n;
    loss_total = loss_total.defined() ? loss_total + share : share;
    return l.loss;
  }));
  result.losses = {{"loss", loss_total}};
  // Every rank agreed on `applied`: the statistics' all-reduce runs on all ranks or on none.
  if (result.updates.back().applied) foldStatistics(t_host, at::cat(per_sample), ctx.step);
  return result;
}

void DiffusionTask::foldStatistics(const at::Tensor& t_host, const at::Tensor& per_sample,
                                   std::int64_t step) {
  if (options_.log_every > 0 && step % options_.log_every == 0) {
    window_sum_.fill(0);
    window_count_.fill(0);
  }
  if (options_.flow) {
    // Per quarter of [0, 1]: loss sums and counts, summed over every rank.
    const at::Tensor losses = per_sample.to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor times = t_host.to(at::kCPU, at::kDouble).contiguous();
    at::Tensor stats = at::zeros({2, 4}, at::kDouble);
    auto s = stats.accessor<double, 2>();
    const auto la = losses.accessor<double, 1>();
    const auto ta = times.accessor<double, 1>();
    for (std::int64_t i = 0; i < losses.size(0); ++i) {
      const int q = std::clamp(static_cast<int>(ta[i] * 4), 0, 3);
      s[0][q] += la[i];
      s[1][q] += 1;
    }
    at::Tensor reduced = stats.to(per_sample.device());
    stats_.sumInPlace(reduced);
    const at::Tensor r = reduced.cpu();
    for (int q = 0; q < 4; ++q) {
      window_sum_[q] += r[0][q].item<double>();
      window_count_[q] += r[1][q].item<double>();
    }
    return;
  }
  // One all-reduce of per-timestep sums of L, L^2 and counts: the loss-aware sampler's history
  // and the loss by timestep quartile.
  at::Tensor stats = sampler_.localStatistics(t_host, per_sample).to(per_sample.device());
  stats_.sumInPlace(stats);
  sampler_.applyGlobalStatistics(stats);
  const at::Tensor s = stats.to(at::kCPU).contiguous();
  const auto sa = s.accessor<double, 2>();
  const std::int64_t steps = options_.diffusion.timesteps;
  for (std::int64_t k = 0; k < steps; ++k) {
    const auto q = static_cast<std::size_t>(std::min<std::int64_t>(3, k * 4 / steps));
    window_sum_[q] += sa[0][k];
    window_count_[q] += sa[2][k];
  }
}

void DiffusionTask::collectState(NamedTensors& tensors,
                                 std::map<std::string, std::int64_t>& ints) const {
  updaters_.collectState(tensors, ints);
  for (auto& entry : sampler_.state(kSamplerPrefix)) tensors.push_back(std::move(entry));
}

void DiffusionTask::restoreState(const std::map<std::string, at::Tensor>& tensors,
                                 const std::map<std::string, std::int64_t>& ints) {
  updaters_.restoreState(tensors, ints);
  if (tensors.count(std::string(kSamplerPrefix) + "history") > 0) {
    sampler_.loadState(tensors, kSamplerPrefix);
  } else if (options_.timestep_sampling == models::TimestepSampling::kLossAware && !options_.flow) {
    throw InputError("the checkpoint has no loss-aware timestep sampler state (" +
                     std::string(kSamplerPrefix) + "history)");
  }
}

std::vector<std::pair<std::string, double>> DiffusionTask::values() const {
  std::vector<std::pair<std::string, double>> out;
  for (std::size_t q = 0; q < 4; ++q) {
    if (window_count_[q] > 0) {
      out.emplace_back("loss_q" + std::to_string(q + 1), window_sum_[q] / window_count_[q]);
    }
  }
  if (!options_.flow && options_.timestep_sampling == models::TimestepSampling::kLossAware) {
    out.emplace_back("timestep_weight_spread", sampler_.weightSpread());
  }
  return out;
}

double DiffusionTask::trainingFlopsPerImage() const {
  return models::unetTrainingFlopsPerImage(options_.unet);
}

std::vector<const comm::ReducerStats*> DiffusionTask::commStats() const {
  return updaters_.commStats();
}

at::Tensor DiffusionTask::sample(std::int64_t first, std::int64_t count) {
  return sampleWith(first, count, options_.sampler, options_.guidance);
}

at::Tensor DiffusionTask::previewSamples(std::int64_t first, std::int64_t count) {
  // Tests: a slow preview on rank 0 only, the case a preview's deadline must absorb.
  if (options_.preview_delay > 0 && comm_.rank() == 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(options_.preview_delay));
  }
  return sample(first, count);
}

at::Tensor DiffusionTask::generate(std::int64_t first, std::int64_t count,
                                   const GenerateOptions& g) {
  models::SamplerOptions s = options_.sampler;
  if (!g.sampler.empty()) {
    static const std::map<std::string, models::SamplerKind> kinds{
        {"ddpm", models::SamplerKind::kAncestral},
        {"ancestral", models::SamplerKind::kAncestral},
        {"ddim", models::SamplerKind::kDdim},
        {"dpm++2m", models::SamplerKind::kDpmSolver2M},
        {"dpm_solver_2m", models::SamplerKind::kDpmSolver2M},
        {"euler", models::SamplerKind::kEuler},
        {"heun", models::SamplerKind::kHeun}};
    const auto it = kinds.find(g.sampler);
    if (it == kinds.end()) {
      throw UsageError("--sampler: unknown sampler '" + g.sampler +
                       "' (ddpm, ddim, dpm++2m, euler, heun)");
    }
    s.kind = it->second;
  }
  if (models::isGaussianSampler(s.kind) == options_.flow) {
    throw UsageError("--sampler: '" + models::toString(s.kind) + "' does not sample the " +
                     (options_.flow ? "interpolation process (flow matching: euler or heun)"
                                    : "Gaussian process (ddpm, ddim or dpm++2m)") +
                     " this checkpoint was trained on");
  }
  if (g.steps) s.steps = *g.steps;
  if (s.steps < 1) throw UsageError("--steps: must be at least 1");
  if (!options_.flow && s.steps > options_.diffusion.timesteps) {
    throw UsageError("--steps: " + str(s.steps) + " is more than the model's " +
                     str(options_.diffusion.timesteps) + " diffusion timesteps");
  }
  if (g.eta) {
    if (*g.eta < 0) throw UsageError("--eta: must be at least 0");
    s.eta = *g.eta;
  }
  if (g.seed) s.seed = *g.seed;
  double guidance = options_.guidance;
  if (g.guidance) {
    if (options_.unet.num_classes == 0 && *g.guidance != 1.0) {
      throw UsageError("--guidance: the model is not class-conditional (unet.num_classes 0)");
    }
    guidance = *g.guidance;
  }
  if (count == 0) {
    if (latent_) {
      const data::ImageShape im = latent_->imageShape();
      return at::empty({0, im.channels, im.height, im.width});
    }
    const models::UNetOptions& u = options_.unet;
    return at::empty({0, u.in_channels, u.resolution, u.resolution});
  }
  return sampleWith(first, count, s, guidance);
}

at::Tensor DiffusionTask::sampleWith(std::int64_t first, std::int64_t count,
                                     const models::SamplerOptions& sampler, double guidance) {
  torch::NoGradGuard no_grad;
  model_->eval();
  const models::UNetOptions& u = options_.unet;
  const std::vector<std::int64_t> shape{u.in_channels, u.resolution, u.resolution};
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(options_.device);
  models::DenoiserFn fn;
  if (u.num_classes > 0) {
    const at::Tensor labels = at::arange(first, first + count, at::TensorOptions().dtype(at::kLong))
                                  .remainder(u.num_classes)
                                  .to(options_.device);
    fn = models::classifierFreeGuidance(
        [this](const at::Tensor& x, const at::Tensor& t, const at::Tensor& l) {
          return model_->forward(x, t, l);
        },
        labels, u.nullLabel(), guidance);
  } else {
    fn = [this](const at::Tensor& x, const at::Tensor& t) { return model_->forward(x, t); };
  }
  at::Tensor images;
  if (options_.flow) {
    images = models::sampleFlow(flow_, fn, sampler, shape, first, count, opts);
  } else {
    images = models::sampleDiffusion(diffusion_, fn, sampler, shape, first, count, opts);
  }
  model_->train();
  images = images.clamp(-1, 1).cpu();
  if (!latent_) return images;
  at::Tensor z = latent_->fromUnit(images);
  if (options_.latent_snap) z = latent_->snap(z);
  return latent_->decode(z);
}

}  // namespace tessera::trainer
