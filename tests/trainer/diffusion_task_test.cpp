// The diffusion task in one process (issue 14): the shipped configs build the UNet presets
// exactly (ddpm-cifar10: 35,746,307 parameters), a step on a world of one trains and feeds the
// loss-aware sampler, whose state survives collectState/restoreState, and sample() gives finite
// images keyed by sample index. Multi-rank equivalence, resume and config errors run the real
// binary (tests/integration/diffusion_training_test.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "comm/local_communicator.h"
#include "core/error.h"
#include "data/batch.h"
#include "trainer/task_factory.h"
#include "trainer/task_registry.h"
#include "trainer/tasks/diffusion_config.h"
#include "trainer/tasks/diffusion_task.h"

namespace tessera::trainer {
namespace {

// The shipped configs (the source tree is compiled in; TESSERA_TEST_SOURCE_DIR overrides it).
std::string config(const std::string& name) {
  const char* dir = std::getenv("TESSERA_TEST_SOURCE_DIR");
  return std::string(dir != nullptr ? dir : TESSERA_SOURCE_DIR) + "/configs/" + name;
}

TaskEnvironment environment(comm::Communicator& comm, std::int64_t size, std::int64_t channels) {
  TaskEnvironment env;
  env.grads = &comm;
  env.image = {size, size, channels};
  return env;
}

void expectSameUNet(const models::UNetOptions& a, const models::UNetOptions& b) {
  EXPECT_EQ(a.in_channels, b.in_channels);
  EXPECT_EQ(a.outChannels(), b.outChannels());
  EXPECT_EQ(a.resolution, b.resolution);
  EXPECT_EQ(a.ch, b.ch);
  EXPECT_EQ(a.ch_mult, b.ch_mult);
  EXPECT_EQ(a.num_res_blocks, b.num_res_blocks);
  EXPECT_EQ(a.attn_resolutions, b.attn_resolutions);
  EXPECT_EQ(a.mid_attention, b.mid_attention);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_DOUBLE_EQ(a.dropout, b.dropout);
  EXPECT_EQ(a.num_classes, b.num_classes);
  EXPECT_EQ(a.norm_groups, b.norm_groups);
  EXPECT_DOUBLE_EQ(a.norm_eps, b.norm_eps);
  EXPECT_EQ(a.conv_shortcut, b.conv_shortcut);
}

std::int64_t parameterCount(torch::nn::Module& m) {
  std::int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(DiffusionConfigs, Cifar10IsThePapersSetup) {
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  const TrainConfig c = loadTrainConfig(config("ddpm_cifar10.yaml"), {"data.train="});
  EXPECT_EQ(c.task, "diffusion");
  const DiffusionTaskOptions o = diffusionTaskOptions(c, environment(comm, 32, 3));
  expectSameUNet(o.unet, models::UNetOptions::ddpmCifar10());
  EXPECT_FALSE(o.flow);
  EXPECT_EQ(o.diffusion.timesteps, 1000);
  EXPECT_EQ(o.diffusion.schedule, models::BetaSchedule::kLinear);
  EXPECT_DOUBLE_EQ(o.diffusion.beta_start, 1e-4);
  EXPECT_DOUBLE_EQ(o.diffusion.beta_end, 0.02);
  EXPECT_EQ(o.diffusion.prediction, models::Prediction::kEps);
  EXPECT_DOUBLE_EQ(c.optimizer("model").lr, 2e-4);
  EXPECT_EQ(c.optimizer("model").warmup_steps, 5000);
  EXPECT_EQ(c.optimizer("model").ema, std::vector<double>{0.9999});
  EXPECT_TRUE(c.data.hflip);
  EXPECT_EQ(c.data.batch_size * 4, 128);  // global batch 128 at 4 ranks
  models::UNet unet = makeUNet(o.unet, 1, c10::Device(c10::kCPU));
  EXPECT_EQ(parameterCount(*unet), 35746307);
}

TEST(DiffusionConfigs, FmnistUsesTheSmallPresetAndFlowTheInterpolation) {
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  const TrainConfig d = loadTrainConfig(config("ddpm_fmnist.yaml"), {"data.train="});
  const DiffusionTaskOptions o = diffusionTaskOptions(d, environment(comm, 28, 1));
  expectSameUNet(o.unet, models::UNetOptions::ddpmFmnist());
  EXPECT_FALSE(o.flow);
  EXPECT_EQ(o.sampler.kind, models::SamplerKind::kDdim);

  const TrainConfig f = loadTrainConfig(config("flow_fmnist.yaml"), {"data.train="});
  const DiffusionTaskOptions fo = diffusionTaskOptions(f, environment(comm, 28, 1));
  expectSameUNet(fo.unet, models::UNetOptions::ddpmFmnist());
  EXPECT_TRUE(fo.flow);
  EXPECT_EQ(fo.flow_matching.time_distribution, models::FlowTimeDistribution::kLogitNormal);
  EXPECT_EQ(fo.sampler.kind, models::SamplerKind::kHeun);
}

TEST(DiffusionConfigs, ImagesMustFitTheUNet) {
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  const TrainConfig c =
      loadTrainConfig(config("ddpm_fmnist.yaml"), {"data.train=", "data.image_size=0"});
  EXPECT_THROW(diffusionTaskOptions(c, environment(comm, 30, 1)), ConfigError);  // 30 % 4 != 0
  EXPECT_THROW(diffusionTaskOptions(c, environment(comm, 32, 1)), ConfigError);  // no 7x7 level
  EXPECT_NO_THROW(diffusionTaskOptions(c, environment(comm, 28, 1)));
}

// A tiny loss-aware task on a world of one.
DiffusionTaskOptions tinyOptions() {
  DiffusionTaskOptions o;
  o.unet.in_channels = 1;
  o.unet.resolution = 8;
  o.unet.ch = 8;
  o.unet.ch_mult = {1, 2};
  o.unet.num_res_blocks = 1;
  o.unet.attn_resolutions = {};
  o.unet.mid_attention = false;
  o.unet.norm_groups = 4;
  o.diffusion.timesteps = 4;
  o.timestep_sampling = models::TimestepSampling::kLossAware;
  o.loss_aware_history = 1;
  o.sampler.kind = models::SamplerKind::kDdim;
  o.sampler.steps = 4;
  o.updater.ema = {0.9};
  o.updater.reducer.caller_scales_loss = true;
  o.log_every = 2;
  o.seed = 7;
  return o;
}

StepContext context(std::int64_t step) {
  StepContext ctx;
  ctx.step = step;
  ctx.lrs = {{"model", 1e-3}};
  ctx.agree_finite = [](bool ok) { return ok; };
  return ctx;
}

data::Batch batch(std::int64_t b) {
  data::Batch x;
  x.images = torch::rand({b, 1, 8, 8}, torch::TensorOptions().dtype(torch::kFloat)) * 2 - 1;
  return x;
}

TEST(DiffusionTask, StepsFeedTheLossAwareSamplerAndItsStateSurvives) {
  torch::manual_seed(0);
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  DiffusionTask task(tinyOptions(), comm);
  EXPECT_FALSE(task.timestepSampler().warmedUp());
  const data::Batch x = batch(8);
  const at::Tensor before = task.model()->parameters()[0].clone();
  for (std::int64_t s = 0; s < 3; ++s) {
    const StepResult r = task.step(x, context(s));
    ASSERT_EQ(r.updates.size(), 1u);
    EXPECT_TRUE(r.updates[0].applied);
    ASSERT_EQ(r.losses.size(), 1u);
    EXPECT_EQ(r.losses[0].first, "loss");
    EXPECT_TRUE(std::isfinite(r.losses[0].second.item<double>()));
  }
  EXPECT_FALSE(torch::equal(before, task.model()->parameters()[0]));
  // 8 stratified draws over T = 4 cover every timestep: warmed up after the first step.
  EXPECT_TRUE(task.timestepSampler().warmedUp());
  bool quartiles = false;
  for (const auto& [name, v] : task.values()) {
    if (name == "loss_q1") quartiles = std::isfinite(v);
  }
  EXPECT_TRUE(quartiles);

  NamedTensors tensors;
  std::map<std::string, std::int64_t> ints;
  task.collectState(tensors, ints);
  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  ASSERT_TRUE(by_name.count("timestep_sampler/history"));
  DiffusionTask fresh(tinyOptions(), comm);
  fresh.restoreState(by_name, ints);
  EXPECT_TRUE(torch::equal(fresh.timestepSampler().probabilities(),
                           task.timestepSampler().probabilities()));
  EXPECT_TRUE(fresh.timestepSampler().warmedUp());

  // A loss-aware run restored from a checkpoint without the sampler's state is an error.
  by_name.erase("timestep_sampler/history");
  DiffusionTask other(tinyOptions(), comm);
  EXPECT_THROW(other.restoreState(by_name, ints), InputError);
}

TEST(DiffusionTask, SamplesAreFiniteAndKeyedBySampleIndex) {
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  DiffusionTask task(tinyOptions(), comm);
  task.step(batch(4), context(0));
  const at::Tensor all = task.sample(0, 4);
  ASSERT_EQ(all.sizes(), (at::IntArrayRef{4, 1, 8, 8}));
  EXPECT_TRUE(torch::isfinite(all).all().item<bool>());
  EXPECT_LE(all.abs().max().item<double>(), 1.0);
  // Samples 2 and 3 drawn alone start from the same keyed noise.
  EXPECT_TRUE(torch::allclose(task.sample(2, 2), all.narrow(0, 2, 2), 1e-4, 1e-5));
  EXPECT_TRUE(task.reconstruct(all).defined() == false);
  EXPECT_DOUBLE_EQ(task.trainingFlopsPerImage(),
                   models::unetTrainingFlopsPerImage(tinyOptions().unet));
}

// Every shipped config (configs/*.yaml, configs/bench/*.yaml) loads and validates.
TEST(ShippedConfigs, EveryConfigLoads) {
  int loaded = 0;
  for (const std::string dir : {"", "bench/"}) {
    for (const auto& entry : std::filesystem::directory_iterator(config(dir))) {
      if (entry.path().extension() != ".yaml") continue;
      SCOPED_TRACE(entry.path().string());
      EXPECT_NO_THROW(loadTrainConfig(entry.path().string(), {}));
      ++loaded;
    }
  }
  EXPECT_GE(loaded, 8);
}

TEST(DiffusionConfigs, LdmFmnist) {
  const TrainConfig c = loadTrainConfig(config("ldm_fmnist.yaml"), {});
  EXPECT_EQ(c.task, "diffusion");
  const auto& own = c.taskConfig<DiffusionConfig>();
  EXPECT_EQ(own.latent.autoencoder, "runs/vqvae-fmnist/checkpoints");
  EXPECT_TRUE(own.latent.snap);
  // x0 prediction: eps and v left the 64-channel latents unrecognisable at 2000 steps.
  EXPECT_EQ(own.diffusion.prediction, PredictionChoice::kX0);
  EXPECT_EQ(c.data.image_size, 7);  // the quick start VQ-VAE's 7 x 7 x 64 latents
  EXPECT_EQ(c.data.channels, 64);
  EXPECT_FALSE(c.data.hflip);
  // Mirrored latents are refused; pixel-space configs have no autoencoder.
  EXPECT_THROW(loadTrainConfig(config("ldm_fmnist.yaml"), {"data.hflip=true"}), ConfigError);
  EXPECT_TRUE(loadTrainConfig(config("ddpm_fmnist.yaml"), {})
                  .taskConfig<DiffusionConfig>()
                  .latent.autoencoder.empty());
}

TEST(DiffusionConfigs, Celeba64) {
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  const TrainConfig c = loadTrainConfig(config("ddpm_celeba64.yaml"), {"data.train="});
  EXPECT_EQ(c.task, "diffusion");
  EXPECT_EQ(c.data.image_size, 64);
  EXPECT_EQ(c.data.channels, 3);
  const DiffusionTaskOptions o = diffusionTaskOptions(c, environment(comm, 64, 3));
  EXPECT_EQ(o.unet.resolution, 64);
  EXPECT_EQ(o.unet.ch_mult, (std::vector<std::int64_t>{1, 2, 2, 2, 4}));
  EXPECT_EQ(o.sampler.kind, models::SamplerKind::kDdim);
  EXPECT_THROW(diffusionTaskOptions(c, environment(comm, 40, 3)), ConfigError);  // 40 % 16 != 0
}

// `tessera sample`'s options through Task::generate: every sampler gives finite images of the
// right shape, DDIM with eta 0 is deterministic, a stochastic sampler follows the seed, and
// options that do not fit the process are usage errors.
TEST(DiffusionTask, GenerateHonoursEverySampler) {
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  DiffusionTask gaussian(tinyOptions(), comm);
  DiffusionTaskOptions fo = tinyOptions();
  fo.flow = true;
  fo.timestep_sampling = models::TimestepSampling::kUniform;
  fo.sampler.kind = models::SamplerKind::kHeun;
  DiffusionTask flow(fo, comm);
  const std::vector<std::pair<DiffusionTask*, std::vector<std::string>>> cases{
      {&gaussian, {"ddpm", "ddim", "dpm++2m"}}, {&flow, {"euler", "heun"}}};
  for (const auto& [task, names] : cases) {
    for (const std::string& name : names) {
      SCOPED_TRACE(name);
      GenerateOptions g;
      g.sampler = name;
      g.steps = 3;
      const at::Tensor x = task->generate(1, 3, g);
      ASSERT_EQ(x.sizes(), (at::IntArrayRef{3, 1, 8, 8}));
      EXPECT_TRUE(torch::isfinite(x).all().item<bool>());
      EXPECT_LE(x.abs().max().item<double>(), 1.0);
    }
  }
  GenerateOptions ddim;
  ddim.sampler = "ddim";
  ddim.eta = 0.0;
  ddim.seed = 5;
  EXPECT_TRUE(torch::equal(gaussian.generate(0, 2, ddim), gaussian.generate(0, 2, ddim)));
  GenerateOptions other = ddim;
  other.seed = 6;
  EXPECT_FALSE(torch::equal(gaussian.generate(0, 2, ddim), gaussian.generate(0, 2, other)));
  GenerateOptions noisy = ddim;
  noisy.eta = 1.0;
  EXPECT_TRUE(torch::equal(gaussian.generate(0, 2, noisy), gaussian.generate(0, 2, noisy)));
  EXPECT_EQ(gaussian.generate(0, 0, ddim).size(0), 0);  // a count of 0 only checks

  GenerateOptions bad;
  bad.sampler = "euler";
  EXPECT_THROW(gaussian.generate(0, 1, bad), UsageError);
  bad.sampler = "ddim";
  EXPECT_THROW(flow.generate(0, 1, bad), UsageError);
  bad.sampler = "bogus";
  EXPECT_THROW(gaussian.generate(0, 1, bad), UsageError);
  GenerateOptions steps;
  steps.steps = 5;  // more than T = 4
  EXPECT_THROW(gaussian.generate(0, 1, steps), UsageError);
  GenerateOptions guided;
  guided.guidance = 3.0;  // the model is unconditional
  EXPECT_THROW(gaussian.generate(0, 1, guided), UsageError);
}

}  // namespace
}  // namespace tessera::trainer
