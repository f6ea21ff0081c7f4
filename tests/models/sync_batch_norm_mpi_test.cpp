// Synchronous BatchNorm across ranks, run under mpirun at 1, 2 and 4 ranks: N ranks, each with its
// slice of a global batch, compute the forward outputs, running statistics and gradients that one
// process computes on the whole batch (issue 13: "2 ranks x B equal 1 x 2B"), also through a
// PatchGAN discriminator's hinge loss and an R1 penalty (second derivatives).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "core/keyed_rng.h"
#include "models/gan_losses.h"
#include "models/patchgan.h"
#include "models/sync_batch_norm.h"
#include "tests/mpi_test_support.h"
#include "trainer/comm_stats_reducer.h"

namespace tessera::models {
namespace {

at::Tensor keyedRandn(std::uint64_t key, at::IntArrayRef sizes) {
  return at::randn(sizes, makeGenerator(rngKey(13, RngPurpose::kTest, key)));
}

double maxRelativeError(const at::Tensor& got, const at::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item<double>();
}

class SyncAcrossRanks : public ::testing::Test {
 protected:
  void SetUp() override {
    comm::CommOptions o;
    o.timeout = std::chrono::milliseconds(60000);
    comm_ = comm::makeCommunicator(testing::mpiSession(), c10::Device(c10::kCPU), o);
    reducer_ = std::make_unique<trainer::CommStatsReducer>(*comm_, "test");
  }
  at::Tensor sumOverRanks(const at::Tensor& t) {
    at::Tensor c = t.clone().contiguous();
    comm_->allReduce({c}, comm::ReduceOp::kSum, {"allreduce", "check", -1, -1});
    return c;
  }
  std::unique_ptr<comm::Communicator> comm_;
  std::unique_ptr<trainer::CommStatsReducer> reducer_;
};

// Rank r holds r + 1 images (uneven on purpose) of a global batch far from zero mean.
TEST_F(SyncAcrossRanks, BatchNormEqualsOneProcessOnTheGlobalBatch) {
  const int rank = comm_->rank(), world = comm_->size();
  const std::int64_t global = world * (world + 1) / 2, first = rank * (rank + 1) / 2;
  const std::int64_t mine_n = rank + 1, c = 6;
  SyncBatchNormOptions o;
  o.num_features = c;
  SyncBatchNorm dist(o), single(o);
  dist->setStatsReducer(reducer_.get());
  {
    torch::NoGradGuard g;
    for (SyncBatchNorm* bn : {&dist, &single}) {
      (*bn)->weight().copy_(keyedRandn(1, {c}) * 0.2 + 1);
      (*bn)->bias().copy_(keyedRandn(2, {c}));
    }
  }
  double worst_y = 0, worst_dx = 0, worst_dw = 0, worst_stats = 0;
  for (int step = 0; step < 4; ++step) {
    const at::Tensor x = keyedRandn(10 + step, {global, c, 5, 4}) * 3 + 7;
    const at::Tensor g = keyedRandn(20 + step, {global, c, 5, 4});
    const at::Tensor xr = x.slice(0, first, first + mine_n).clone().requires_grad_(true);
    const at::Tensor yr = dist->forward(xr);
    (yr * g.slice(0, first, first + mine_n)).sum().backward();
    const at::Tensor xs = x.clone().requires_grad_(true);
    const at::Tensor ys = single->forward(xs);
    (ys * g).sum().backward();

    worst_y = std::max(worst_y, maxRelativeError(yr, ys.slice(0, first, first + mine_n)));
    worst_dx =
        std::max(worst_dx, maxRelativeError(xr.grad(), xs.grad().slice(0, first, first + mine_n)));
    // Parameter gradients: this rank's share; their sum over ranks is the whole batch's.
    worst_dw = std::max(
        {worst_dw, maxRelativeError(sumOverRanks(dist->weight().grad()), single->weight().grad()),
         maxRelativeError(sumOverRanks(dist->bias().grad()), single->bias().grad())});
    worst_stats =
        std::max({worst_stats, maxRelativeError(dist->runningMean(), single->runningMean()),
                  maxRelativeError(dist->runningVar(), single->runningVar())});
    for (SyncBatchNorm* bn : {&dist, &single}) {
      (*bn)->weight().mutable_grad().zero_();
      (*bn)->bias().mutable_grad().zero_();
    }
  }
  if (rank == 0) {
    std::printf(
        "[world %d] max relative error: outputs %.3g, input grads %.3g, parameter grads %.3g, "
        "running stats %.3g\n",
        world, worst_y, worst_dx, worst_dw, worst_stats);
  }
  EXPECT_LT(worst_y, 1e-5);
  EXPECT_LT(worst_dx, 1e-5);
  EXPECT_LT(worst_dw, 1e-5);
  EXPECT_LT(worst_stats, 1e-6);

  // Eval mode: the running statistics, no collective.
  dist->eval();
  single->eval();
  const at::Tensor x = keyedRandn(99, {2, c, 3, 3});
  EXPECT_TRUE(torch::equal(dist->forward(x), single->forward(x)));
}

// A discriminator step as the trainer takes it: hinge loss on real and fake plus an R1 penalty,
// each rank on its slice, gradients averaged over ranks = one process on the global batch.
TEST_F(SyncAcrossRanks, PatchGanStepWithR1EqualsOneProcess) {
  const int rank = comm_->rank(), world = comm_->size();
  const std::int64_t b = 2, global = b * world;
  PatchGanOptions o;
  o.in_channels = 1;
  o.ndf = 8;
  o.n_layers = 3;
  o.norm = DiscriminatorNorm::kSyncBatchNorm;
  torch::manual_seed(5);
  PatchGanDiscriminator dist(o);
  torch::manual_seed(5);
  PatchGanDiscriminator single(o);
  dist->setStatsReducer(reducer_.get());

  const auto loss = [](PatchGanDiscriminator& d, const at::Tensor& real, const at::Tensor& fake) {
    const at::Tensor r = real.clone().requires_grad_(true);
    const at::Tensor logits_real = d->forward(r);
    const at::Tensor logits_fake = d->forward(fake);
    return discriminatorLoss(GanLoss::kHinge, logits_real, logits_fake) +
           5.0 * r1Penalty(logits_real, r);
  };
  double worst = 0, worst_stats = 0;
  for (int step = 0; step < 3; ++step) {
    const at::Tensor real = keyedRandn(30 + step, {global, 1, 28, 28}).tanh();
    const at::Tensor fake = keyedRandn(40 + step, {global, 1, 28, 28}).tanh() * 0.5;
    loss(dist, real.slice(0, rank * b, rank * b + b), fake.slice(0, rank * b, rank * b + b))
        .backward();
    loss(single, real, fake).backward();
    const auto pd = dist->parameters(), ps = single->parameters();
    for (std::size_t i = 0; i < pd.size(); ++i) {
      const at::Tensor mean = sumOverRanks(pd[i].grad()) / world;  // the trainer's averaging
      worst = std::max(worst, maxRelativeError(mean, ps[i].grad()));
      pd[i].mutable_grad().zero_();
      ps[i].mutable_grad().zero_();
    }
    for (std::size_t k = 0; k < dist->syncBatchNorms().size(); ++k) {
      worst_stats = std::max({worst_stats,
                              maxRelativeError(dist->syncBatchNorms()[k]->runningMean(),
                                               single->syncBatchNorms()[k]->runningMean()),
                              maxRelativeError(dist->syncBatchNorms()[k]->runningVar(),
                                               single->syncBatchNorms()[k]->runningVar())});
    }
  }
  if (rank == 0) {
    std::printf(
        "[world %d] PatchGAN + R1: max relative error of averaged gradients %.3g, running "
        "stats %.3g\n",
        world, worst, worst_stats);
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_LT(worst_stats, 1e-5);
}

}  // namespace
}  // namespace tessera::models
