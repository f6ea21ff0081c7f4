// The VQGAN task (issue 13) on its own, under mpirun at 1 and 2 ranks:
// - every shipped config builds the models whose parameter counts README lists;
// - the generator update leaves the discriminator's parameters untouched and vice versa, and
//   before loss.disc_start there is no discriminator update;
// - the adaptive weight lambda is identical on every rank and equals the single-process value
//   on the global batch, and 2 ranks x B train what 1 process x 2B trains (Gumbel quantizer with
//   noise keyed by the global sample index; discriminator with GroupNorm against 2 micro-batches,
//   and with synchronous BatchNorm against one batch of 2B).
// The real binary (equivalence, disc_start, resume, a learning run) is tests/integration/vqgan_*.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/local_communicator.h"
#include "comm/mpi_session.h"
#include "data/batch.h"
#include "models/parameters.h"
#include "tests/mpi_test_support.h"
#include "trainer/task_factory.h"
#include "trainer/task_registry.h"
#include "trainer/tasks/vqgan_task.h"

namespace tessera::trainer {
namespace {

// The shipped configs (the source tree is compiled in; TESSERA_TEST_SOURCE_DIR overrides it).
std::string config(const std::string& name) {
  const char* dir = std::getenv("TESSERA_TEST_SOURCE_DIR");
  return std::string(dir != nullptr ? dir : TESSERA_SOURCE_DIR) + "/configs/" + name;
}

std::unique_ptr<Task> build(const TrainConfig& c, comm::Communicator& comm) {
  TaskEnvironment env;
  env.grads = &comm;
  env.image = {c.data.image_size, c.data.image_size, c.data.channels};
  return makeTask(c, env);
}

std::int64_t count(torch::nn::Module& m) {
  return models::trainableParameterCount(m);
}

bool isWorldOfOne() {
  return testing::mpiSession().world().size == 1;
}

TEST(VqganConfigs, ParameterCountsOfEveryShippedConfig) {
  if (!isWorldOfOne()) GTEST_SKIP() << "one process is enough";
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  struct Expected {
    const char* file;
    std::int64_t autoencoder, discriminator;
  };
  // README ("VQGAN") lists these.
  for (const Expected& e : {Expected{"vqgan_fmnist.yaml", 1078817, 166817},
                            Expected{"vqgan_cifar10.yaml", 23541891, 663361},
                            Expected{"vqgan_f16_imagenet.yaml", 72141699, 2765633}}) {
    SCOPED_TRACE(e.file);
    const TrainConfig c = loadTrainConfig(config(e.file), {"data.train="});
    EXPECT_EQ(c.task, "vqgan");
    auto task = build(c, comm);
    std::int64_t ae = -1, d = -1;
    for (auto& [name, m] : task->modules()) {
      if (name == "generator") ae = count(*m);
      if (name == "discriminator") d = count(*m);
    }
    std::printf("%s: autoencoder %lld, discriminator %lld\n", e.file, static_cast<long long>(ae),
                static_cast<long long>(d));
    EXPECT_EQ(ae, e.autoencoder);
    EXPECT_EQ(d, e.discriminator);
  }
}

// A tiny VQGAN on 28x28 gray images.
std::vector<std::string> tiny(std::vector<std::string> extra) {
  std::vector<std::string> o{"data.train=",
                             "model.ch=8",
                             "model.ch_mult=[1,2]",
                             "model.attn_resolutions=[]",
                             "model.mid_attention=false",
                             "model.z_channels=8",
                             "model.embed_dim=8",
                             "model.norm_groups=4",
                             "quantizer.codebook_size=32",
                             "discriminator.ndf=8",
                             "discriminator.n_layers=1",
                             "discriminator.norm_groups=4",
                             "loss.disc_start=0"};
  o.insert(o.end(), extra.begin(), extra.end());
  return o;
}

at::Tensor globalImages(std::int64_t n) {
  torch::manual_seed(77);
  return torch::rand({n, 1, 28, 28}) * 2 - 1;
}

data::Batch batchOf(const at::Tensor& images) {
  data::Batch b;
  b.images = images;
  return b;
}

StepContext context(std::int64_t step, double g_lr, double d_lr) {
  StepContext ctx;
  ctx.step = step;
  ctx.lrs = {{"generator", g_lr}, {"discriminator", d_lr}};
  ctx.agree_finite = [](bool ok) { return ok; };
  return ctx;
}

std::vector<at::Tensor> snapshot(torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

bool unchanged(torch::nn::Module& m, const std::vector<at::Tensor>& before) {
  const auto now = m.parameters();
  for (std::size_t i = 0; i < before.size(); ++i) {
    if (!torch::equal(now[i], before[i])) return false;
  }
  return true;
}

torch::nn::Module& module(Task& t, const std::string& name) {
  for (auto& [n, m] : t.modules()) {
    if (n == name) return *m;
  }
  throw std::runtime_error("no module " + name);
}

TEST(VqganTask, EachUpdateTouchesOnlyItsOwnModel) {
  if (!isWorldOfOne()) GTEST_SKIP() << "one process is enough";
  comm::LocalCommunicator comm(c10::Device(c10::kCPU));
  const data::Batch batch = batchOf(globalImages(4));
  const TrainConfig c = loadTrainConfig(config("vqgan_fmnist.yaml"), tiny({}));
  {
    // The discriminator's learning rate 0: the step's generator update moves the autoencoder
    // and nothing of the discriminator.
    auto task = build(c, comm);
    const auto d0 = snapshot(module(*task, "discriminator"));
    const auto g0 = snapshot(module(*task, "generator"));
    const StepResult r = task->step(batch, context(0, 1e-3, 0));
    ASSERT_EQ(r.updates.size(), 2u);
    EXPECT_TRUE(unchanged(module(*task, "discriminator"), d0));
    EXPECT_FALSE(unchanged(module(*task, "generator"), g0));
  }
  {
    // The generator's learning rate 0: the discriminator moves, the autoencoder does not.
    auto task = build(c, comm);
    const auto d0 = snapshot(module(*task, "discriminator"));
    const auto g0 = snapshot(module(*task, "generator"));
    task->step(batch, context(0, 0, 1e-3));
    EXPECT_FALSE(unchanged(module(*task, "discriminator"), d0));
    EXPECT_TRUE(unchanged(module(*task, "generator"), g0));
  }
  {
    // Before disc_start: only the generator's update, no adversarial terms.
    auto task =
        build(loadTrainConfig(config("vqgan_fmnist.yaml"), tiny({"loss.disc_start=2"})), comm);
    const auto d0 = snapshot(module(*task, "discriminator"));
    for (std::int64_t s = 0; s < 2; ++s) {
      const StepResult r = task->step(batch, context(s, 1e-3, 1e-3));
      ASSERT_EQ(r.updates.size(), 1u);
      EXPECT_EQ(r.updates[0].name, "generator");
      for (const auto& [name, v] : r.losses) {
        EXPECT_TRUE(name != "gen" && name != "disc" && name != "lambda") << name;
      }
    }
    EXPECT_TRUE(unchanged(module(*task, "discriminator"), d0));
    const StepResult r = task->step(batch, context(2, 1e-3, 1e-3));
    ASSERT_EQ(r.updates.size(), 2u);
    EXPECT_EQ(r.updates[1].name, "discriminator");
    EXPECT_FALSE(unchanged(module(*task, "discriminator"), d0));
  }
}

double lambdaOf(const StepResult& r) {
  for (const auto& [name, v] : r.losses) {
    if (name == "lambda") return v.item<double>();
  }
  ADD_FAILURE() << "no lambda";
  return -1;
}

double worstRelative(Task& a, Task& b) {
  double worst = 0;
  for (const char* name : {"generator", "discriminator"}) {
    const auto pa = module(a, name).parameters();
    const auto pb = module(b, name).parameters();
    for (std::size_t i = 0; i < pa.size(); ++i) {
      const double den = std::max(pb[i].abs().max().item<double>(), 1e-12);
      worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>() / den);
    }
  }
  return worst;
}

// Every rank trains its slice of the global batch on the gradient communicator; every rank also
// trains the whole batch alone (grad_accum micro-batches), and they are compared.
void acrossRanks(const std::vector<std::string>& extra, int reference_micro_batches,
                 double lambda_bound, double parameter_bound) {
  comm::CommOptions co;
  co.timeout = std::chrono::seconds(60);
  auto grads = comm::makeCommunicator(testing::mpiSession(), c10::Device(c10::kCPU), co);
  const int rank = grads->rank(), size = grads->size();
  const std::int64_t per_rank = 4, steps = 4;
  const at::Tensor images = globalImages(per_rank * size);
  std::vector<std::string> ovr = tiny(extra);
  ovr.push_back("optim.generator.lr=1e-3");
  auto task = build(loadTrainConfig(config("vqgan_fmnist.yaml"), ovr), *grads);
  comm::LocalCommunicator local(c10::Device(c10::kCPU));
  ovr.push_back("comm.grad_accum=" + std::to_string(reference_micro_batches));
  auto alone = build(loadTrainConfig(config("vqgan_fmnist.yaml"), ovr), local);
  for (std::int64_t s = 0; s < steps; ++s) {
    const StepContext ctx = context(s, 1e-3, 1e-3);
    const double lambda = lambdaOf(
        task->step(batchOf(images.narrow(0, rank * per_rank, per_rank).contiguous()), ctx));
    const double reference = lambdaOf(alone->step(batchOf(images), ctx));
    // The same value on every rank, bit for bit.
    const at::Tensor all =
        grads->allGather(torch::tensor({lambda}, at::kDouble), {"allgather", "lambda", s, -1});
    for (std::int64_t r = 0; r < size; ++r) {
      EXPECT_EQ(all[r].item<double>(), lambda) << "step " << s << ": rank " << r;
    }
    EXPECT_GT(lambda, 0);
    EXPECT_LE(std::abs(lambda - reference), lambda_bound * std::abs(reference))
        << "step " << s << ": " << lambda << " vs one process " << reference;
  }
  const double worst = worstRelative(*task, *alone);
  std::printf(
      "rank %d, %d ranks x %lld vs 1 x %lld (%d micro-batches), %lld steps: worst "
      "relative parameter difference %.3g\n",
      rank, size, static_cast<long long>(per_rank), static_cast<long long>(per_rank * size),
      reference_micro_batches, static_cast<long long>(steps), worst);
  EXPECT_LE(worst, parameter_bound);
}

// GroupNorm in the discriminator, Gumbel quantizer: N ranks x B against one process with N
// micro-batches of B (the same per-sample computations and the same sums): bit for bit.
TEST(VqganAcrossRanks, GumbelAndGroupNormEqualOneProcessInMicroBatches) {
  const int size = testing::mpiSession().world().size;
  acrossRanks(
      {"quantizer.kind=gumbel", "quantizer.temperature_steps=10", "discriminator.norm=group"}, size,
      0, 0);  // bit for bit
}

// Synchronous BatchNorm: N ranks x B against one process with one batch of N*B (statistics over
// the global batch). Adam amplifies reordered float sums: 1e-3 relative (README).
TEST(VqganAcrossRanks, GumbelAndSyncBatchNormEqualOneProcessOnTheGlobalBatch) {
  acrossRanks(
      {"quantizer.kind=gumbel", "quantizer.temperature_steps=10", "discriminator.norm=batch"}, 1,
      1e-4, 1e-3);
}

}  // namespace
}  // namespace tessera::trainer
