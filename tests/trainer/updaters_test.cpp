// Several optimizers on one gradient communicator (trainer::Updaters), under mpirun at 1 and 2
// ranks: a generator's update leaves the discriminator's gradients (its buckets) untouched, the
// reducers' order rules are enforced, gradients taken with autograd::grad can be averaged, and
// two alternating updates on 2 ranks equal one process with the global batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>

#include "comm/communicator.h"
#include "comm/local_communicator.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "tests/mpi_test_support.h"
#include "trainer/model_updater.h"

namespace tessera::trainer {
namespace {

std::unique_ptr<comm::Communicator> makeGrads() {
  comm::CommOptions o;
  o.timeout = std::chrono::seconds(30);
  return comm::makeCommunicator(testing::mpiSession(), c10::Device(c10::kCPU), o);
}

UpdaterOptions options() {
  UpdaterOptions o;
  o.reducer.caller_scales_loss = true;
  o.reducer.first_bucket_cap_bytes = 64;  // several buckets even for these small modules
  o.reducer.bucket_cap_bytes = 64;
  return o;
}

// A generator and a discriminator with the same initial weights wherever they are built.
struct Pair {
  torch::nn::Linear gen{nullptr}, disc{nullptr};
  Pair() {
    torch::manual_seed(11);
    gen = torch::nn::Linear(4, 4);
    disc = torch::nn::Linear(4, 1);
  }
};

at::Tensor globalBatch() {
  torch::manual_seed(5);
  return torch::randn({8, 4});
}

StepContext context(std::int64_t step) {
  StepContext ctx;
  ctx.step = step;
  ctx.lrs = {{"generator", 0.01}, {"discriminator", 0.005}};
  return ctx;
}

std::vector<at::Tensor> gradsOf(torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.grad().clone());
  return out;
}

// One alternating step: the generator's loss runs through the discriminator (frozen meanwhile),
// then the discriminator learns on the detached output.
void alternate(Updaters& u, Pair& m, const at::Tensor& x, std::int64_t step, bool check) {
  const StepContext ctx = context(step);
  const auto disc_before = gradsOf(*m.disc);
  const OptimizerOutcome g = u.update("generator", ctx, 1, [&](int) {
    if (check) EXPECT_FALSE(m.disc->weight.requires_grad());
    const at::Tensor y = m.gen(x);
    return torch::mse_loss(y, x) + 0.1 * m.disc(y).mean();
  });
  EXPECT_TRUE(g.applied);
  EXPECT_DOUBLE_EQ(g.lr, 0.01);
  EXPECT_TRUE(m.disc->weight.requires_grad());
  if (check) {
    const auto disc_after = gradsOf(*m.disc);
    for (std::size_t i = 0; i < disc_after.size(); ++i) {
      EXPECT_TRUE(disc_after[i].equal(disc_before[i])) << "discriminator gradient " << i;
    }
  }
  const OptimizerOutcome d = u.update("discriminator", ctx, 1,
                                      [&](int) { return m.disc(m.gen(x).detach()).pow(2).mean(); });
  EXPECT_TRUE(d.applied);
  EXPECT_DOUBLE_EQ(d.lr, 0.005);
}

TEST(Updaters, AlternatingUpdatesEqualOneProcessWithTheGlobalBatch) {
  auto grads = makeGrads();
  const at::Tensor x = globalBatch();
  const at::Tensor mine = x.chunk(grads->size(), 0)[static_cast<std::size_t>(grads->rank())];

  Pair dist;
  Updaters u(*grads);
  u.add("generator", *dist.gen, options());
  u.add("discriminator", *dist.disc, options());
  for (int step = 0; step < 3; ++step) alternate(u, dist, mine, step, /*check=*/true);

  comm::LocalCommunicator local(c10::Device(c10::kCPU));
  Pair ref;
  Updaters r(local);
  r.add("generator", *ref.gen, options());
  r.add("discriminator", *ref.disc, options());
  for (int step = 0; step < 3; ++step) alternate(r, ref, x, step, /*check=*/false);

  const auto a = dist.gen->parameters(), b = ref.gen->parameters();
  const auto c = dist.disc->parameters(), d = ref.disc->parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-6, 1e-7)) << "generator parameter " << i;
  }
  for (std::size_t i = 0; i < c.size(); ++i) {
    EXPECT_TRUE(torch::allclose(c[i], d[i], 1e-6, 1e-7)) << "discriminator parameter " << i;
  }
  // They did move, each by its own learning rate (Adam's first steps are about lr each).
  Pair initial;
  const double gen_move = (a[0] - initial.gen->weight).abs().max().item<double>();
  const double disc_move = (c[0] - initial.disc->weight).abs().max().item<double>();
  EXPECT_GT(gen_move, 0.01);
  EXPECT_LE(gen_move, 0.04);
  EXPECT_GT(disc_move, 0.005);
  EXPECT_LE(disc_move, 0.02);
}

TEST(Updaters, GradientsOutsideTheirUpdateAreRefused) {
  auto grads = makeGrads();
  const at::Tensor x = globalBatch();
  Pair m;
  Updaters u(*grads);
  u.add("generator", *m.gen, options());
  u.add("discriminator", *m.disc, options());
  alternate(u, m, x, 0, /*check=*/false);
  // A loss through the discriminator backpropagated outside any update (not frozen): its
  // reducer would add it into the buckets of the next update.
  try {
    m.disc(x).mean().backward();
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside prepare()/finish()"), std::string::npos)
        << e.what();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("outside prepare()/finish()"), std::string::npos)
        << e.what();
  }
}

TEST(Updaters, OneSynchronisingBackwardAtATimePerCommunicator) {
  auto grads = makeGrads();
  Pair m;
  Updaters u(*grads);
  ModelUpdater& g = u.add("generator", *m.gen, options());
  ModelUpdater& d = u.add("discriminator", *m.disc, options());
  g.zeroGrad();
  g.prepareBackward(/*last_micro_batch=*/true, 0);
  try {
    d.prepareBackward(true, 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("same communicator"), std::string::npos) << e.what();
  }
  std::vector<at::Tensor> t{torch::ones({2})};
  EXPECT_THROW(u.average(t, "adaptive weight", 0), Error);
  g.finishBackward();  // every rank launches the same buckets
  EXPECT_NO_THROW(d.prepareBackward(true, 0));
  d.finishBackward();
}

TEST(Updaters, AutogradGradientsAverageToTheGlobalBatchGradient) {
  auto grads = makeGrads();
  const at::Tensor x = globalBatch();
  const at::Tensor mine = x.chunk(grads->size(), 0)[static_cast<std::size_t>(grads->rank())];
  Pair m;
  Updaters u(*grads);
  u.add("generator", *m.gen, options());
  const auto local = torch::autograd::grad({torch::mse_loss(m.gen(mine), mine)}, {m.gen->weight});
  std::vector<at::Tensor> averaged{local[0].clone()};
  u.average(averaged, "adaptive weight", 0);
  const auto global = torch::autograd::grad({torch::mse_loss(m.gen(x), x)}, {m.gen->weight});
  EXPECT_TRUE(torch::allclose(averaged[0], global[0], 1e-6, 1e-7));
}

}  // namespace
}  // namespace tessera::trainer
