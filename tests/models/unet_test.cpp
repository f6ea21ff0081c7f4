#include "models/unet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace tessera::models {
namespace {

std::int64_t trainable(const torch::nn::Module& m) {
  std::int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.requires_grad() ? p.numel() : 0;
  return n;
}

// A model whose zero-initialised layers are made random, so outputs depend on every input.
void randomizeZeroLayers(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) {
    if (p.abs().sum().item<double>() == 0 && p.dim() > 1) p.normal_(0, 0.05);
  }
}

UNetOptions tiny() {
  UNetOptions o;
  o.in_channels = 1;
  o.resolution = 8;
  o.ch = 16;
  o.ch_mult = {1, 2};
  o.num_res_blocks = 1;
  o.attn_resolutions = {4};
  o.norm_groups = 4;
  o.dropout = 0.0;
  return o;
}

TEST(UNet, DdpmCifar10HasThePapersParameterCount) {
  torch::manual_seed(0);
  UNet model(UNetOptions::ddpmCifar10());
  EXPECT_EQ(trainable(*model), 35746307);
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({2, 3, 32, 32});
  const at::Tensor out = model->forward(x, torch::tensor({0, 999}));
  EXPECT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(out.isfinite().all().item<bool>());
}

TEST(UNet, FashionMnistConfigShapesAndCount) {
  torch::manual_seed(0);
  const UNetOptions o = UNetOptions::ddpmFmnist();
  UNet model(o);
  EXPECT_EQ(trainable(*model), 1112801);
  randomizeZeroLayers(*model);
  const at::Tensor x = torch::randn({3, 1, 28, 28});
  const at::Tensor out = model->forward(x, torch::tensor({1.0, 500.0, 999.0}));
  EXPECT_EQ(out.sizes(), x.sizes());
  out.pow(2).mean().backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
  }
}

TEST(UNet, StartsAsZeroOutputAndRejectsBadShapes) {
  UNet model(tiny());
  const at::Tensor out = model->forward(torch::randn({2, 1, 8, 8}), torch::tensor({3, 4}));
  EXPECT_EQ(out.abs().max().item<float>(), 0.0f);  // the output convolution starts at zero
  EXPECT_THROW(model->forward(torch::randn({2, 1, 7, 7}), torch::tensor({3, 4})), c10::Error);
  EXPECT_THROW(model->forward(torch::randn({2, 2, 8, 8}), torch::tensor({3, 4})), c10::Error);
  EXPECT_THROW(model->forward(torch::randn({2, 1, 8, 8}), torch::tensor({3})), c10::Error);
  UNetOptions bad = tiny();
  bad.resolution = 10;
  bad.ch_mult = {1, 2, 2};
  EXPECT_THROW(UNet{bad}, c10::Error);
}

TEST(UNet, MultiHeadAttentionAndOutChannels) {
  UNetOptions o = tiny();
  o.num_heads = 4;
  o.out_channels = 2;
  UNet model(o);
  randomizeZeroLayers(*model);
  const at::Tensor out = model->forward(torch::randn({2, 1, 8, 8}), torch::tensor({0, 1}));
  EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{2, 2, 8, 8}));
}

TEST(UNet, ClassConditioningWithNullClass) {
  UNetOptions o = tiny();
  o.num_classes = 3;
  UNet model(o);
  randomizeZeroLayers(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({2, 1, 8, 8});
  const at::Tensor t = torch::tensor({5, 5});
  const at::Tensor a = model->forward(x, t, torch::tensor({0, 1}));
  const at::Tensor b = model->forward(x, t, torch::tensor({2, 1}));
  EXPECT_FALSE(torch::allclose(a[0], b[0]));
  EXPECT_TRUE(torch::equal(a[1], b[1]));
  // No labels: the null class.
  EXPECT_TRUE(torch::equal(model->forward(x, t), model->forward(x, t, torch::tensor({3, 3}))));
  UNet unconditional(tiny());
  EXPECT_THROW(unconditional->forward(x, t, torch::tensor({0, 1})), c10::Error);
}

TEST(UNet, TimestepEmbeddingClosedForm) {
  const at::Tensor e = timestepEmbedding(torch::tensor({0.0, 2.0}), 8);
  ASSERT_EQ(e.sizes(), (std::vector<std::int64_t>{2, 8}));
  for (int i = 0; i < 4; ++i) {
    const double freq = std::exp(-std::log(10000.0) * i / 3.0);
    EXPECT_NEAR(e[0][i].item<double>(), 0.0, 1e-7);
    EXPECT_NEAR(e[0][i + 4].item<double>(), 1.0, 1e-7);
    EXPECT_NEAR(e[1][i].item<double>(), std::sin(2.0 * freq), 1e-6);
    EXPECT_NEAR(e[1][i + 4].item<double>(), std::cos(2.0 * freq), 1e-6);
  }
}

TEST(UNet, KeyedDropoutDependsOnlyOnKeyAndGlobalSampleIndex) {
  const at::Tensor x = torch::ones({4, 3, 5, 5});
  const at::Tensor all = keyedDropout(x, 0.3, 42, 10);
  const at::Tensor tail = keyedDropout(x.slice(0, 2), 0.3, 42, 12);
  EXPECT_TRUE(torch::equal(all.slice(0, 2), tail));
  EXPECT_FALSE(torch::equal(all, keyedDropout(x, 0.3, 43, 10)));
  EXPECT_FALSE(torch::equal(all[0], all[1]));
  // Kept values scaled by 1 / (1 - p); the keep rate is 1 - p.
  const at::Tensor big = keyedDropout(torch::ones({8, 1000, 100}), 0.1, 7, 0);
  const double kept = big.ne(0).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 0.9, 0.002);  // 800k draws: sd 0.00034
  EXPECT_NEAR(big.max().item<double>(), 1.0 / 0.9, 1e-6);
  // The loop (CPU) and the tensor operations (other devices) compute the same mask.
  EXPECT_TRUE(torch::equal(keyedDropoutMask({8, 1000, 100}, 0.1, 7, 0, torch::kFloat),
                           keyedDropoutMask({8, 1000, 100}, 0.1, 7, 0, torch::kFloat, true)));
  EXPECT_TRUE(torch::equal(keyedDropoutMask({3, 5}, 0.5, 1, 1000, torch::kDouble),
                           keyedDropoutMask({3, 5}, 0.5, 1, 1000, torch::kDouble, true)));
  // Per channel and per position too (no striping).
  const at::Tensor per_channel = big.ne(0).to(at::kDouble).mean(std::vector<std::int64_t>{0, 2});
  EXPECT_LT((per_channel - 0.9).abs().max().item<double>(), 0.05);
}

TEST(UNet, KeyedDropoutMakesSlicesOfTheGlobalBatch) {
  UNetOptions o = tiny();
  o.dropout = 0.5;
  torch::manual_seed(3);
  UNet model(o);
  randomizeZeroLayers(*model);
  model->train();
  const at::Tensor x = torch::randn({4, 1, 8, 8});
  const at::Tensor t = torch::tensor({1, 2, 3, 4});
  const at::Tensor whole = model->forward(x, t, {}, UNetDropoutKey{99, 0});
  const at::Tensor first =
      model->forward(x.slice(0, 0, 2), t.slice(0, 0, 2), {}, UNetDropoutKey{99, 0});
  const at::Tensor second = model->forward(x.slice(0, 2), t.slice(0, 2), {}, UNetDropoutKey{99, 2});
  EXPECT_TRUE(torch::allclose(whole, torch::cat({first, second}), 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(whole, model->forward(x, t, {}, UNetDropoutKey{99, 0})));
  EXPECT_FALSE(torch::allclose(whole, model->forward(x, t, {}, UNetDropoutKey{100, 0})));
  model->eval();
  EXPECT_TRUE(torch::equal(model->forward(x, t, {}, UNetDropoutKey{99, 0}),
                           model->forward(x, t, {}, UNetDropoutKey{100, 0})));
}

// Multiply-adds of a one-level model (ch 8, 4x4 input, one res block, no attention):
//   timestep MLP 8*32 + 32*32 = 1280; conv_in 1*8*9*16 = 1152;
//   down block (8 -> 8): 2 * 8*8*9*16 + 32*8 = 18688; middle: 2 * 18688 = 37376;
//   up blocks (16 -> 8), two: 2 * (16*8*9*16 + 32*8 + 8*8*9*16 + 16*8*16) = 59904;
//   conv_out 8*1*9*16 = 1152. Total 119552, times 2 FLOPs and 3 passes.
TEST(UNet, TrainingFlopsCountEveryLayer) {
  UNetOptions o;
  o.in_channels = 1;
  o.resolution = 4;
  o.ch = 8;
  o.ch_mult = {1};
  o.num_res_blocks = 1;
  o.attn_resolutions = {};
  o.mid_attention = false;
  EXPECT_DOUBLE_EQ(unetTrainingFlopsPerImage(o), 6.0 * 119552);
  // Attention adds 4 C^2 N + 2 N^2 C multiply-adds per block.
  UNetOptions with_mid = o;
  with_mid.mid_attention = true;
  EXPECT_DOUBLE_EQ(unetTrainingFlopsPerImage(with_mid) - unetTrainingFlopsPerImage(o),
                   6.0 * (4 * 64 * 16 + 2 * 256 * 8));
  // ddpm-cifar10: 6,221,856,768 multiply-adds per forward pass; ddpm-fmnist: 190,039,552.
  EXPECT_DOUBLE_EQ(unetTrainingFlopsPerImage(UNetOptions::ddpmCifar10()), 6.0 * 6221856768.0);
  EXPECT_DOUBLE_EQ(unetTrainingFlopsPerImage(UNetOptions::ddpmFmnist()), 6.0 * 190039552.0);
}

}  // namespace
}  // namespace tessera::models
