#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <limits>

#include "trainer/optim/adam.h"
#include "trainer/optim/grad_norm.h"
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

TEST(WeightEma, WarmupFollowsTheWeightsEarly) {
  at::Tensor p = torch::zeros({1}, torch::kDouble);
  WeightEma ema({{"w", p}}, {0.999});
  ema.setWarmup(true);
  EXPECT_DOUBLE_EQ(ema.effectiveDecay(0.999, 1), 2.0 / 11.0);
  EXPECT_DOUBLE_EQ(ema.effectiveDecay(0.999, 100000), 0.999);
  // Shadow after u updates towards a constant 1 is 1 - prod(decay_i): far from the 0.999 run.
  p.fill_(1);
  double expected = 0;
  for (std::int64_t u = 1; u <= 5; ++u) {
    ema.update();
    const double d = (1.0 + u) / (10.0 + u);
    expected = d * expected + (1 - d);
  }
  EXPECT_NEAR(ema.shadow(0)[0].item<double>(), expected, 1e-12);
  EXPECT_GT(expected, 0.5);
  WeightEma plain({{"w", p}}, {0.999});
  EXPECT_DOUBLE_EQ(plain.effectiveDecay(0.999, 1), 0.999);
}

// ---- Multi-tensor updates against the per-tensor reference ----------------------------------
//
// kForeach runs on the CPU as the reference's own per-tensor kernels: bitwise equal. kFusedCpu
// does the same float arithmetic in one pass, but LibTorch's AVX2 kernels fuse some multiply-adds
// (m b1 + (1 - b1) g is one FMA there, two roundings here): a few ulps per step, bounded below.

// Parameters shaped like a UNet's (conv weights, biases, norms), one without a gradient, one not
// contiguous and one float64 (these two go the foreach way inside kFusedCpu).
struct ParamSet {
  std::vector<at::Tensor> params;
  std::vector<std::pair<std::string, at::Tensor>> named;
};

ParamSet makeParams() {
  torch::manual_seed(7);
  ParamSet s;
  const std::vector<std::vector<std::int64_t>> shapes{
      {64, 32, 3, 3}, {64}, {64}, {64}, {128, 64, 1, 1}, {128}, {40000}, {3}, {17, 5}};
  for (const auto& shape : shapes) s.params.push_back(torch::randn(shape));
  s.params.push_back(torch::randn({6, 4}).t());           // not contiguous
  s.params.push_back(torch::randn({9}, torch::kDouble));  // not float32
  s.params.push_back(torch::randn({5}));                  // never gets a gradient
  for (auto& p : s.params) p.requires_grad_(true);
  for (std::size_t i = 0; i < s.params.size(); ++i) {
    s.named.emplace_back("p" + std::to_string(i), s.params[i]);
  }
  return s;
}

ParamSet cloneParams(const ParamSet& from) {
  ParamSet s;
  for (const auto& p : from.params) {
    // Same strides as the original (clone preserves them).
    s.params.push_back(p.detach().clone().requires_grad_(true));
  }
  for (std::size_t i = 0; i < s.params.size(); ++i) {
    s.named.emplace_back("p" + std::to_string(i), s.params[i]);
  }
  return s;
}

// Gradients for one step, identical for every copy; the last parameter gets none.
void setGrads(const std::vector<at::Tensor>& params, std::int64_t step) {
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(1000 + step);
  for (std::size_t i = 0; i + 1 < params.size(); ++i) {
    const at::Tensor& p = params[i];
    at::Tensor g = at::randn(p.sizes(), gen, p.options().requires_grad(false));
    // Some elements' gradients vanish, as ReLU networks' do (exp_avg_sq -> 0: eps matters).
    g.masked_fill_(g.abs() < 0.1, 0);
    p.mutable_grad() = g;
  }
}

// Largest |a - b| over every element of a tensor, relative to the largest |b| of that tensor
// (elements near zero, e.g. moments of gradients that cancel, carry their tensor's rounding);
// the worst over every tensor.
double maxRelDiff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const at::Tensor x = a[i].detach().to(torch::kDouble), y = b[i].detach().to(torch::kDouble);
    const double scale = y.abs().max().item<double>();
    if (scale > 0) worst = std::max(worst, (x - y).abs().max().item<double>() / scale);
  }
  return worst;
}

bool allEqual(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

struct AdamRun {
  ParamSet set;
  std::unique_ptr<Adam> adam;
};

// `steps` Adam steps with `kernel` on a copy of `init`.
AdamRun runAdam(const ParamSet& init, UpdateKernel kernel, double weight_decay, bool adamw,
                int steps) {
  AdamRun run{cloneParams(init), nullptr};
  AdamOptions o;
  o.weight_decay = weight_decay;
  o.decoupled_weight_decay = adamw;
  o.kernel = kernel;
  run.adam = std::make_unique<Adam>(run.set.params, o);
  for (int i = 0; i < steps; ++i) {
    setGrads(run.set.params, i);
    run.adam->step(i < 5 ? 0.01 : 0.003);
  }
  return run;
}

std::vector<at::Tensor> stateTensors(const Adam& adam) {
  std::vector<at::Tensor> out;
  for (auto& [name, t] : adam.state()) out.push_back(t);
  return out;
}

void compareAdamKernels(double weight_decay, bool adamw) {
  const ParamSet init = makeParams();
  const int steps = 12;
  const AdamRun ref = runAdam(init, UpdateKernel::kPerTensor, weight_decay, adamw, steps);
  const AdamRun foreach = runAdam(init, UpdateKernel::kForeach, weight_decay, adamw, steps);
  const AdamRun fused = runAdam(init, UpdateKernel::kFusedCpu, weight_decay, adamw, steps);
  EXPECT_TRUE(allEqual(foreach.set.params, ref.set.params));
  EXPECT_TRUE(allEqual(stateTensors(*foreach.adam), stateTensors(*ref.adam)));
  const double param_diff = maxRelDiff(fused.set.params, ref.set.params);
  const double state_diff = maxRelDiff(stateTensors(*fused.adam), stateTensors(*ref.adam));
  // ~1 ulp of the tensor's scale measured (6e-8 and 1.5e-7 after 12 steps, AVX2 machine).
  EXPECT_LT(param_diff, 1e-6);
  EXPECT_LT(state_diff, 1e-6);
  std::cout << "fused vs per-tensor after " << steps << " steps: params " << param_diff
            << ", moments " << state_diff << " (relative)\n";
  // The parameter without a gradient is untouched by every kernel; its moments stay zero.
  EXPECT_TRUE(torch::equal(fused.set.params.back(), init.params.back()));
  EXPECT_TRUE(torch::equal(foreach.set.params.back(), init.params.back()));
  EXPECT_EQ(fused.adam->state().back().second.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(fused.adam->steps(), steps);
}

TEST(MultiTensorAdam, KernelsMatchPerTensorReference) {
  compareAdamKernels(0.0, false);
}
TEST(MultiTensorAdam, KernelsMatchPerTensorReferenceWithL2) {
  compareAdamKernels(0.05, false);
}
TEST(MultiTensorAdam, KernelsMatchPerTensorReferenceAdamW) {
  compareAdamKernels(0.05, true);
}

TEST(MultiTensorAdam, FusedIsDeterministicAcrossThreadCounts) {
  const ParamSet init = makeParams();
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const AdamRun one = runAdam(init, UpdateKernel::kFusedCpu, 0.05, true, 4);
  at::set_num_threads(3);
  const AdamRun three = runAdam(init, UpdateKernel::kFusedCpu, 0.05, true, 4);
  at::set_num_threads(threads);
  EXPECT_TRUE(allEqual(one.set.params, three.set.params));
  EXPECT_TRUE(allEqual(stateTensors(*one.adam), stateTensors(*three.adam)));
}

TEST(MultiTensorAdam, FusedBumpsVersionCounters) {
  at::Tensor p = torch::randn({8}).requires_grad_(true);
  AdamOptions o;
  o.kernel = UpdateKernel::kFusedCpu;
  Adam adam({p}, o);
  p.mutable_grad() = torch::ones({8});
  const auto before = p._version();
  adam.step(0.1);
  EXPECT_GT(p._version(), before);
}

TEST(MultiTensorEma, KernelsMatchPerTensorReference) {
  // 0.999: lerp weight 0.001 (self + w (end - self)); 0.3: weight 0.7 (from the end).
  const ParamSet init = makeParams();
  std::vector<std::unique_ptr<WeightEma>> emas;
  std::vector<ParamSet> sets;
  const std::vector<UpdateKernel> kernels{UpdateKernel::kPerTensor, UpdateKernel::kForeach,
                                          UpdateKernel::kFusedCpu, UpdateKernel::kAuto};
  for (std::size_t k = 0; k < kernels.size(); ++k) sets.push_back(cloneParams(init));
  for (std::size_t k = 0; k < kernels.size(); ++k) {
    emas.push_back(
        std::make_unique<WeightEma>(sets[k].named, std::vector<double>{0.999, 0.3}, kernels[k]));
  }
  for (int step = 0; step < 6; ++step) {
    auto gen = torch::make_generator<at::CPUGeneratorImpl>(50 + step);
    for (std::size_t k = 0; k < kernels.size(); ++k) {
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < init.params.size(); ++i) {
        auto g = torch::make_generator<at::CPUGeneratorImpl>(100 * step + i);
        const at::Tensor& p = sets[k].params[i];
        p.add_(at::randn(p.sizes(), g, p.options().requires_grad(false)), 0.1);
      }
      emas[k]->update();
    }
  }
  for (std::size_t rate = 0; rate < 2; ++rate) {
    const auto& ref = emas[0]->shadow(rate);
    for (std::size_t k = 1; k < kernels.size(); ++k) {
      const double diff = maxRelDiff(emas[k]->shadow(rate), ref);
      std::cout << updateKernelName(kernels[k]) << " rate " << rate << ": " << diff << "\n";
      // foreach: 0 (bitwise); fused: 6e-8 measured (one rounding of the tensor's scale).
      EXPECT_LT(diff, 5e-7) << updateKernelName(kernels[k]) << " rate " << rate;
    }
  }
  for (std::size_t k = 0; k < kernels.size(); ++k) EXPECT_EQ(emas[k]->updates(), 6);
  // State names are unchanged.
  EXPECT_EQ(emas[1]->state().front().first, "0.999/p0");
}

TEST(GradNorm, GlobalNormMatchesReference) {
  ParamSet set = makeParams();
  setGrads(set.params, 3);
  std::vector<at::Tensor> grads;
  for (const auto& p : set.params) grads.push_back(p.grad());  // the last one is undefined
  const at::Tensor norm = globalNorm(grads);
  const at::Tensor ref = reference::globalNorm(grads);
  EXPECT_EQ(norm.dim(), 0);
  EXPECT_EQ(norm.scalar_type(), at::kFloat);
  EXPECT_TRUE(norm.device().is_cpu());
  double expected = 0;  // in float64 over every element
  for (const auto& g : grads) {
    if (g.defined()) expected += g.to(torch::kDouble).pow(2).sum().item<double>();
  }
  expected = std::sqrt(expected);
  EXPECT_NEAR(norm.item<double>(), expected, 1e-6 * expected);
  EXPECT_NEAR(ref.item<double>(), expected, 1e-6 * expected);
  EXPECT_EQ(globalNorm({}).item<float>(), 0.0f);
  EXPECT_EQ(globalNorm({at::Tensor()}).item<float>(), 0.0f);
}

TEST(GradNorm, ClipMatchesReferenceBitwise) {
  for (const double max_norm : {0.5, 1e9}) {
    ParamSet a = makeParams(), b = makeParams();
    setGrads(a.params, 4);
    setGrads(b.params, 4);
    std::vector<at::Tensor> ga, gb;
    for (const auto& p : a.params) ga.push_back(p.grad());
    for (const auto& p : b.params) gb.push_back(p.grad());
    const at::Tensor norm = globalNorm(ga);
    clipByGlobalNorm(ga, max_norm, norm);
    reference::clipByGlobalNorm(gb, max_norm, norm);
    for (std::size_t i = 0; i + 1 < ga.size(); ++i) EXPECT_TRUE(torch::equal(ga[i], gb[i])) << i;
    if (max_norm < 1) {
      EXPECT_NEAR(globalNorm(ga).item<double>(), max_norm, 1e-5);
    }
  }
}

TEST(GradNorm, ClipLeavesGradientsAloneOnNaNNorm) {
  at::Tensor g = torch::randn({10});
  const at::Tensor before = g.clone();
  clipByGlobalNorm({g}, 1.0, torch::tensor(std::numeric_limits<float>::quiet_NaN()));
  EXPECT_TRUE(torch::equal(g, before));
}

}  // namespace
}  // namespace tessera::trainer
