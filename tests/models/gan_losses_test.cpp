#include "models/gan_losses.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace tessera::models {
namespace {

double softplus(double x) {
  return std::log1p(std::exp(x));
}
double item(const at::Tensor& t) {
  return t.item<double>();
}

const at::Tensor& real() {
  static const at::Tensor t = torch::tensor({2.0f, 0.5f, -1.0f});
  return t;
}
const at::Tensor& fake() {
  static const at::Tensor t = torch::tensor({-2.0f, 0.0f, 1.0f});
  return t;
}

TEST(GanLosses, HingeOnHandMadeLogits) {
  // relu(1 - real) = (0, 0.5, 2); relu(1 + fake) = (0, 1, 2)
  EXPECT_NEAR(item(discriminatorLoss(GanLoss::kHinge, real(), fake())), 0.5 * (2.5 / 3 + 1.0),
              1e-6);
  EXPECT_NEAR(item(generatorLoss(GanLoss::kHinge, fake())), 1.0 / 3, 1e-6);
}

TEST(GanLosses, VanillaAndNonSaturatingOnHandMadeLogits) {
  double d = 0, g_vanilla = 0, g_ns = 0;
  for (int i = 0; i < 3; ++i) {
    const double r = real()[i].item<double>(), f = fake()[i].item<double>();
    d += (softplus(-r) + softplus(f)) / 3;  // -log sigmoid(r) - log(1 - sigmoid(f))
    g_vanilla += -softplus(f) / 3;          // log(1 - sigmoid(f))
    g_ns += softplus(-f) / 3;               // -log sigmoid(f)
  }
  for (GanLoss kind : {GanLoss::kVanilla, GanLoss::kNonSaturating}) {
    EXPECT_NEAR(item(discriminatorLoss(kind, real(), fake())), 0.5 * d, 1e-6);
  }
  EXPECT_NEAR(item(generatorLoss(GanLoss::kVanilla, fake())), g_vanilla, 1e-6);
  EXPECT_NEAR(item(generatorLoss(GanLoss::kNonSaturating, fake())), g_ns, 1e-6);
  // BCE with logits, as torch computes it.
  const at::Tensor bce = 0.5 * (torch::binary_cross_entropy_with_logits(real(), torch::ones({3})) +
                                torch::binary_cross_entropy_with_logits(fake(), torch::zeros({3})));
  EXPECT_NEAR(item(discriminatorLoss(GanLoss::kVanilla, real(), fake())), item(bce), 1e-6);
  EXPECT_EQ(parseGanLoss("non_saturating"), GanLoss::kNonSaturating);
  EXPECT_THROW(parseGanLoss("wgan"), ConfigError);
}

TEST(GanLosses, DiscriminatorAccuracy) {
  // real > 0: 2 of 3; fake < 0: 1 of 3 (0 counts as wrong on both sides).
  EXPECT_NEAR(item(discriminatorAccuracy(real(), fake())), 0.5, 1e-7);
  EXPECT_NEAR(item(discriminatorAccuracy(torch::ones({2, 1, 3, 3}), -torch::ones({2, 1, 3, 3}))),
              1.0, 1e-7);
  EXPECT_NEAR(item(discriminatorAccuracy(-torch::ones({4}), torch::ones({2}))), 0.0, 1e-7);
}

TEST(GanLosses, R1PenaltyOfKnownDiscriminators) {
  // D(x) = sum(w * x) per image: the gradient is w, the penalty ||w||^2, d/dw = 2w.
  const at::Tensor w = torch::randn({1, 2, 3, 3}).requires_grad_(true);
  const at::Tensor x = torch::randn({4, 2, 3, 3}).requires_grad_(true);
  const at::Tensor penalty = r1Penalty((x * w).sum({1, 2, 3}), x);
  EXPECT_NEAR(item(penalty), item(w.detach().pow(2).sum()), 1e-5);
  penalty.backward();
  EXPECT_TRUE(torch::allclose(w.grad(), 2 * w.detach(), 1e-5, 1e-6));

  // D(x) = sum(x^2): the gradient is 2x, the penalty mean over images of ||2x||^2.
  const at::Tensor y = torch::randn({3, 1, 2, 2}).requires_grad_(true);
  EXPECT_NEAR(item(r1Penalty(y.pow(2).sum({1, 2, 3}), y)),
              item((2 * y.detach()).pow(2).sum({1, 2, 3}).mean()), 1e-5);
  EXPECT_THROW(r1Penalty(torch::ones({1}), torch::ones({1})), c10::Error);
}

TEST(GanLosses, AdaptiveWeightClamp) {
  const auto t = [](double v) { return torch::tensor(v, torch::kFloat); };
  EXPECT_NEAR(item(adaptiveWeight(t(2.0), t(1.0), 0.8)), 2.0 / (1.0 + 1e-4) * 0.8, 1e-6);
  EXPECT_NEAR(item(adaptiveWeight(t(1.0), t(0.0), 1.0)), 1e4, 1e-3);  // 1 / 1e-4, at the clamp
  EXPECT_NEAR(item(adaptiveWeight(t(1e6), t(1.0), 0.5)), 0.5e4, 1e-3);
  EXPECT_EQ(item(adaptiveWeight(t(0.0), t(3.0), 1.0)), 0.0);
  const at::Tensor n = t(3.0).requires_grad_(true);
  EXPECT_FALSE(adaptiveWeight(n, t(1.0), 1.0).requires_grad());
}

TEST(GanLosses, ReconstructionError) {
  const at::Tensor x = torch::tensor({1.0f, -2.0f}), y = torch::tensor({0.5f, 1.0f});
  EXPECT_TRUE(torch::allclose(reconstructionError(ReconstructionLoss::kL1, x, y),
                              torch::tensor({0.5f, 3.0f})));
  EXPECT_TRUE(torch::allclose(reconstructionError(ReconstructionLoss::kL2, x, y),
                              torch::tensor({0.25f, 9.0f})));
  EXPECT_EQ(parseReconstructionLoss("l2"), ReconstructionLoss::kL2);
  EXPECT_THROW(parseReconstructionLoss("huber"), ConfigError);
}

}  // namespace
}  // namespace tessera::models
