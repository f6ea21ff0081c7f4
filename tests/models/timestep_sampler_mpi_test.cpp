// Diffusion draws across real ranks (run under mpirun at 1, 2, 3 and 4 ranks): each rank draws its
// slice of the global batch, and the gathered draws are those of one process with the whole
// batch; the loss-aware sampler's distribution, updated by one all-reduce per step, is the same
// bits on every rank and the one-process distribution; samples and keyed dropout do not depend on
// the world size.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "models/samplers.h"
#include "models/stats_reducer.h"
#include "models/timestep_sampler.h"
#include "models/unet.h"
#include "tests/mpi_test_support.h"

namespace tessera::models {
namespace {

// A StatsReducer over the test's communicator, counting the sums.
class CommReducer final : public StatsReducer {
 public:
  explicit CommReducer(comm::Communicator& comm) : comm_(comm) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  void sumInPlace(at::Tensor& t) override {
    ++sums;
    comm_.allReduce({t}, comm::ReduceOp::kSum, {"allreduce", "timesteps", -1, -1});
  }
  at::Tensor allGather(const at::Tensor& t) override {
    return comm_.allGather(t, {"allgather", "test", -1, -1});
  }
  void broadcast(at::Tensor& t, int root) override {
    comm_.broadcast({t}, root, {"broadcast", "test", -1, -1});
  }
  int sums = 0;

 private:
  comm::Communicator& comm_;
};

class DiffusionAcrossRanks : public ::testing::Test {
 protected:
  void SetUp() override {
    comm::CommOptions o;
    o.timeout = std::chrono::milliseconds(60000);
    comm_ = comm::makeCommunicator(testing::mpiSession(), c10::Device(c10::kCPU), o);
    rank_ = comm_->rank();
    world_ = comm_->size();
  }
  // This rank's slice of a global batch of g (the first g % world ranks get one more).
  std::pair<std::int64_t, std::int64_t> slice(std::int64_t g) const {
    const std::int64_t base = g / world_, extra = g % world_;
    const std::int64_t begin = rank_ * base + std::min<std::int64_t>(rank_, extra);
    return {begin, begin + base + (rank_ < extra ? 1 : 0)};
  }
  // Every rank's rows in rank order (rows may differ in number).
  at::Tensor gather(const at::Tensor& t) {
    return comm_->allGather(t.contiguous(), {"allgather", "test", -1, -1});
  }
  std::unique_ptr<comm::Communicator> comm_;
  int rank_ = 0, world_ = 1;
};

// The loss of global sample i at timestep t: deterministic, different per sample.
at::Tensor syntheticLoss(const at::Tensor& t, std::int64_t first, std::int64_t timesteps) {
  return t.to(at::kDouble).div(static_cast<double>(timesteps)).add(0.2) *
         at::arange(first, first + t.size(0), at::kDouble).remainder(5).add(1);
}

TEST_F(DiffusionAcrossRanks, DrawsOfEveryRankMakeTheGlobalBatch) {
  for (TimestepSampling kind :
       {TimestepSampling::kUniform, TimestepSampling::kStratified, TimestepSampling::kLossAware}) {
    TimestepSamplerOptions o;
    o.kind = kind;
    o.timesteps = 40;
    o.history = 2;
    o.seed = 31;
    TimestepSampler s(o);
    if (kind == TimestepSampling::kLossAware) {
      // The same warmed-up state everywhere, without collectives.
      for (std::int64_t step = 0; step < 40; ++step) {
        const TimestepDraw d = s.draw(step, 24, 0, 24);
        s.applyGlobalStatistics(s.localStatistics(d.t, syntheticLoss(d.t, 0, 40)));
      }
      ASSERT_TRUE(s.warmedUp());
    }
    for (std::int64_t g : {24, 13}) {
      for (std::int64_t step : {0, 9}) {
        const auto [b, e] = slice(g);
        const TimestepDraw mine = s.draw(step, g, b, e);
        const TimestepDraw all = s.draw(step, g, 0, g);
        EXPECT_TRUE(torch::equal(gather(mine.t), all.t)) << toString(kind) << " g " << g;
        EXPECT_TRUE(torch::equal(gather(mine.weights), all.weights)) << toString(kind);
        if (kind == TimestepSampling::kStratified && g == 24) {
          // 40 timesteps do not split into 24 strata evenly: the uniforms' strata are unique.
          const at::Tensor u = gather(keyedUniforms(31, step, g, b, e, true));
          EXPECT_TRUE(
              torch::equal(std::get<0>(u.mul(g).floor().sort()), at::arange(g, at::kDouble)));
        }
      }
    }
  }
  ContinuousTimeOptions c;
  c.distribution = FlowTimeDistribution::kLogitNormal;
  const auto [b, e] = slice(24);
  EXPECT_TRUE(torch::equal(gather(drawContinuousTimes(c, 4, 24, b, e)),
                           drawContinuousTimes(c, 4, 24, 0, 24)));
}

TEST_F(DiffusionAcrossRanks, LossAwareDistributionIsTheSameOnEveryRank) {
  const std::int64_t n = 30, g = 24;
  TimestepSamplerOptions o;
  o.kind = TimestepSampling::kLossAware;
  o.timesteps = n;
  o.history = 3;
  o.seed = 8;
  TimestepSampler mine(o), single(o);
  CommReducer reducer(*comm_);
  LocalStatsReducer local;
  const auto [b, e] = slice(g);
  for (std::int64_t step = 0; step < 60; ++step) {
    const TimestepDraw d = mine.draw(step, g, b, e);
    mine.update(d.t, syntheticLoss(d.t, b, n), reducer);
    ASSERT_EQ(reducer.sums, step + 1);  // one all-reduce per step
    const TimestepDraw all = single.draw(step, g, 0, g);
    single.update(all.t, syntheticLoss(all.t, 0, n), local);
    // Every rank holds the same bits.
    const at::Tensor every = gather(mine.probabilities().view({1, -1}));
    ASSERT_TRUE(every.eq(every[0]).all().item<bool>()) << "step " << step;
    // And one process with the whole batch has the same distribution (up to summation order).
    ASSERT_TRUE(torch::allclose(mine.probabilities(), single.probabilities(), 1e-12, 0));
    ASSERT_EQ(mine.warmedUp(), single.warmedUp());
  }
  EXPECT_TRUE(mine.warmedUp());
  EXPECT_GT(mine.weightSpread(), 1.5);
  // The state every rank would checkpoint is the same.
  for (const auto& [name, tensor] : mine.state()) {
    const at::Tensor every = gather(tensor.reshape({1, -1}).to(at::kDouble));
    EXPECT_TRUE(every.eq(every[0]).all().item<bool>()) << name;
  }
}

TEST_F(DiffusionAcrossRanks, SamplesAndDropoutDoNotDependOnTheWorldSize) {
  // An analytic denoiser (data N(0, 0.25)) so that the samples depend on the noise only.
  GaussianDiffusion d(DiffusionOptions{});
  const DenoiserFn model = [&](const at::Tensor& x, const at::Tensor& t) {
    const at::Tensor abar = d.gather(d.alphasCumprod(), t.round().to(at::kLong), x);
    return x * (1 - abar).sqrt() / (0.25 * abar + 1 - abar);  // (x - a E[x0|x]) / s
  };
  const std::vector<std::int64_t> shape{1, 4, 4};
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  for (SamplerKind kind : {SamplerKind::kAncestral, SamplerKind::kDdim}) {
    SamplerOptions s;
    s.kind = kind;
    s.steps = 20;
    s.eta = 1.0;
    s.seed = 4;
    const auto [b, e] = slice(10);
    const at::Tensor mine = sampleDiffusion(d, model, s, shape, b, e - b, opts);
    const at::Tensor all = sampleDiffusion(d, model, s, shape, 0, 10, opts);
    EXPECT_TRUE(torch::allclose(gather(mine), all, 1e-6, 1e-6)) << toString(kind);
  }
  // Keyed dropout in a training-mode UNet forward: the ranks' slices make the global batch.
  UNetOptions u;
  u.in_channels = 1;
  u.resolution = 8;
  u.ch = 16;
  u.ch_mult = {1, 2};
  u.num_res_blocks = 1;
  u.attn_resolutions = {4};
  u.norm_groups = 4;
  u.dropout = 0.3;
  torch::manual_seed(1);  // the same weights on every rank
  UNet net(u);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) {
      if (p.dim() > 1 && p.abs().sum().item<double>() == 0) p.normal_(0, 0.05);
    }
  }
  net->train();
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor x = at::randn({6, 1, 8, 8}, gen);
  const at::Tensor t = at::arange(6) * 100;
  const auto [b, e] = slice(6);
  torch::NoGradGuard no_grad;
  const at::Tensor mine =
      net->forward(x.slice(0, b, e), t.slice(0, b, e), {}, UNetDropoutKey{77, b});
  const at::Tensor all = net->forward(x, t, {}, UNetDropoutKey{77, 0});
  EXPECT_TRUE(torch::allclose(gather(mine), all, 1e-5, 1e-6));
}

}  // namespace
}  // namespace tessera::models
