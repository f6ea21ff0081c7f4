#include <gtest/gtest.h>
#include <torch/torch.h>

#include "trainer/optim/adam.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/optim/weight_ema.h"

namespace tessera::trainer {
namespace {

// Runs `steps` updates of Tessera's Adam and LibTorch's reference on identical parameters and
// gradients; they must agree exactly (same arithmetic, same order).
void compareWithLibTorch(bool adamw, double weight_decay) {
  torch::manual_seed(1);
  const at::Tensor init = torch::randn({5, 3});
  at::Tensor a = init.clone().requires_grad_(true);
  at::Tensor b = init.clone().requires_grad_(true);
  AdamOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = weight_decay;
  o.decoupled_weight_decay = adamw;
  Adam mine({a}, o);
  std::unique_ptr<torch::optim::Optimizer> ref;
  if (adamw) {
    ref = std::make_unique<torch::optim::AdamW>(
        std::vector<at::Tensor>{b},
        torch::optim::AdamWOptions(0.01).betas({0.8, 0.95}).eps(1e-6).weight_decay(weight_decay));
  } else {
    ref = std::make_unique<torch::optim::Adam>(
        std::vector<at::Tensor>{b},
        torch::optim::AdamOptions(0.01).betas({0.8, 0.95}).eps(1e-6).weight_decay(weight_decay));
  }
  for (int step = 0; step < 20; ++step) {
    const at::Tensor g = torch::randn({5, 3});
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    mine.step(0.01);
    ref->step();
  }
  EXPECT_TRUE(torch::allclose(a, b, 1e-6, 1e-7)) << (a - b).abs().max().item<double>();
  EXPECT_EQ(mine.steps(), 20);
}

TEST(Adam, MatchesLibTorchAdam) {
  compareWithLibTorch(false, 0.0);
}
TEST(Adam, MatchesLibTorchAdamWithL2) {
  compareWithLibTorch(false, 0.1);
}
TEST(Adam, MatchesLibTorchAdamW) {
  compareWithLibTorch(true, 0.1);
}

TEST(Adam, StateRoundTripsExactly) {
  at::Tensor a = torch::randn({4}).requires_grad_(true);
  Adam one({a}, {});
  a.mutable_grad() = torch::randn({4});
  one.step(0.1);
  at::Tensor b = a.detach().clone().requires_grad_(true);
  Adam two({b}, {});
  auto state = one.state();
  for (auto& [name, t] : state) t = t.clone();
  two.loadState(state, one.steps());
  const at::Tensor g = torch::randn({4});
  a.mutable_grad() = g.clone();
  b.mutable_grad() = g.clone();
  one.step(0.1);
  two.step(0.1);
  EXPECT_TRUE(torch::equal(a, b));
}

TEST(LrSchedule, WarmupThenCosine) {
  LrScheduleOptions o;
  o.peak = 1.0;
  o.min = 0.1;
  o.warmup_steps = 10;
  o.total_steps = 110;
  o.cosine = true;
  EXPECT_DOUBLE_EQ(learningRate(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(learningRate(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(learningRate(o, 10), 1.0);
  EXPECT_NEAR(learningRate(o, 60), 0.55, 1e-12);
  EXPECT_NEAR(learningRate(o, 110), 0.1, 1e-12);
  o.cosine = false;
  EXPECT_DOUBLE_EQ(learningRate(o, 100), 1.0);
}

TEST(WeightEma, AveragesEveryRate) {
  at::Tensor p = torch::zeros({2});
  WeightEma ema({{"w", p}}, {0.5, 0.9});
  p.fill_(1);
  ema.update();
  EXPECT_TRUE(torch::allclose(ema.shadow(0)[0], torch::full({2}, 0.5)));
  EXPECT_TRUE(torch::allclose(ema.shadow(1)[0], torch::full({2}, 0.1)));
  const auto state = ema.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "0.5/w");
  EXPECT_EQ(state[1].first, "0.9/w");
}

}  // namespace
}  // namespace tessera::trainer
