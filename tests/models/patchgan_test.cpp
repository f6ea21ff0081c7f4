#include "models/patchgan.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "models/gan_losses.h"
#include "models/sync_batch_norm.h"

namespace tessera::models {
namespace {

using Sizes = std::vector<std::int64_t>;

// ---- SyncBatchNorm in a world of one equals torch::nn::BatchNorm2d ------------------------------

TEST(SyncBatchNorm, OneRankEqualsTorchBatchNorm) {
  for (bool with_reducer : {false, true}) {
    SCOPED_TRACE(with_reducer ? "LocalStatsReducer" : "no reducer");
    torch::manual_seed(4);
    SyncBatchNormOptions o;
    o.num_features = 5;
    SyncBatchNorm mine(o);
    LocalStatsReducer local;
    if (with_reducer) mine->setStatsReducer(&local);
    torch::nn::BatchNorm2d ref(torch::nn::BatchNorm2dOptions(5));
    {
      torch::NoGradGuard g;
      mine->weight().uniform_(0.5, 1.5);
      mine->bias().uniform_(-1, 1);
      ref->weight.copy_(mine->weight());
      ref->bias.copy_(mine->bias());
    }
    for (int step = 0; step < 4; ++step) {
      // Inputs far from zero mean: the shifted sums must keep the variance exact.
      const at::Tensor x = torch::randn({6, 5, 4, 3}) * 0.5 + 20;
      const at::Tensor g = torch::randn({6, 5, 4, 3});
      const at::Tensor xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
      const at::Tensor ya = mine->forward(xa), yb = ref->forward(xb);
      EXPECT_TRUE(torch::allclose(ya, yb, 1e-4, 1e-5)) << (ya - yb).abs().max().item<double>();
      (ya * g).sum().backward();
      (yb * g).sum().backward();
      EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), 1e-3, 1e-4))
          << (xa.grad() - xb.grad()).abs().max().item<double>();
      EXPECT_TRUE(torch::allclose(mine->runningMean(), ref->running_mean, 1e-5, 1e-6));
      EXPECT_TRUE(torch::allclose(mine->runningVar(), ref->running_var, 1e-5, 1e-6));
    }
    EXPECT_TRUE(torch::allclose(mine->weight().grad(), ref->weight.grad(), 1e-4, 1e-4));
    EXPECT_TRUE(torch::allclose(mine->bias().grad(), ref->bias.grad(), 1e-5, 1e-5));
    EXPECT_EQ(mine->named_buffers()["num_batches_tracked"].item<std::int64_t>(), 4);

    mine->eval();
    ref->eval();
    const at::Tensor x = torch::randn({2, 5, 4, 3}) + 20;
    EXPECT_TRUE(torch::allclose(mine->forward(x), ref->forward(x), 1e-4, 1e-5));
  }
}

TEST(SyncBatchNorm, AllReduceSumIsTheIdentityForOneRank) {
  LocalStatsReducer local;
  const at::Tensor x = torch::randn({4}).requires_grad_(true);
  const at::Tensor y = allReduceSum(x, local);
  EXPECT_TRUE(torch::equal(y, x));
  (y * torch::arange(4)).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), torch::arange(4).to(torch::kFloat)));
}

// ---- PatchGAN ------------------------------------------------------------------------------

PatchGanOptions options(DiscriminatorNorm norm, std::int64_t in = 3, std::int64_t ndf = 64) {
  PatchGanOptions o;
  o.in_channels = in;
  o.ndf = ndf;
  o.norm = norm;
  return o;
}

TEST(PatchGan, OutputShapes) {
  for (auto [side, layers, want] :
       {std::tuple<int, int, int>{28, 3, 1}, {32, 3, 2}, {64, 3, 6}, {28, 2, 5}, {32, 1, 14}}) {
    PatchGanOptions o = options(DiscriminatorNorm::kGroupNorm, 1, 32);
    o.n_layers = layers;
    PatchGanDiscriminator d(o);
    EXPECT_EQ(PatchGanDiscriminatorImpl::outputSide(o, side), want);
    EXPECT_EQ(d->forward(torch::randn({2, 1, side, side})).sizes(), (Sizes{2, 1, want, want}))
        << side << " " << layers;
  }
  EXPECT_EQ(PatchGanDiscriminatorImpl::outputSide(options(DiscriminatorNorm::kNone), 256), 30);
}

TEST(PatchGan, LayersOfTheDescription) {
  PatchGanDiscriminator d(options(DiscriminatorNorm::kSyncBatchNorm));
  std::vector<std::pair<std::string, Sizes>> shapes;
  for (const auto& p : d->named_parameters()) shapes.emplace_back(p.key(), p.value().sizes().vec());
  const std::vector<std::pair<std::string, Sizes>> want{
      {"main.0.weight", {64, 3, 4, 4}},
      {"main.0.bias", {64}},               // conv, LeakyReLU
      {"main.2.weight", {128, 64, 4, 4}},  // conv without bias, BN
      {"main.3.weight", {128}},
      {"main.3.bias", {128}},
      {"main.5.weight", {256, 128, 4, 4}},
      {"main.6.weight", {256}},
      {"main.6.bias", {256}},
      {"main.8.weight", {512, 256, 4, 4}},  // stride 1
      {"main.9.weight", {512}},
      {"main.9.bias", {512}},
      {"main.11.weight", {1, 512, 4, 4}},
      {"main.11.bias", {1}}};
  EXPECT_EQ(shapes, want);
  EXPECT_EQ(d->syncBatchNorms().size(), 3u);

  // Without normalisation every convolution has a bias.
  PatchGanDiscriminator plain(options(DiscriminatorNorm::kNone));
  EXPECT_EQ(plain->parameters().size(), 10u);
  EXPECT_TRUE(plain->syncBatchNorms().empty());
  EXPECT_EQ(parseDiscriminatorNorm("group"), DiscriminatorNorm::kGroupNorm);
  EXPECT_THROW(parseDiscriminatorNorm("instance"), ConfigError);
}

TEST(PatchGan, InitialisationStatistics) {
  for (DiscriminatorNorm norm :
       {DiscriminatorNorm::kSyncBatchNorm, DiscriminatorNorm::kGroupNorm}) {
    torch::manual_seed(0);
    PatchGanDiscriminator d(options(norm));
    std::vector<at::Tensor> convs, scales;
    for (const auto& p : d->named_parameters()) {
      const at::Tensor& t = p.value();
      if (t.dim() == 4) {
        convs.push_back(t.flatten());
      } else if (p.key().find("bias") != std::string::npos) {
        EXPECT_EQ(t.abs().max().item<float>(), 0) << p.key();
      } else {
        scales.push_back(t);
      }
    }
    const at::Tensor w = torch::cat(convs), s = torch::cat(scales);  // 2.8M and 896 values
    EXPECT_NEAR(w.mean().item<double>(), 0, 1e-4);
    EXPECT_NEAR(w.std().item<double>(), 0.02, 1e-4);
    EXPECT_NEAR(s.mean().item<double>(), 1, 3e-3);
    EXPECT_NEAR(s.std().item<double>(), 0.02, 2e-3);
    // Deterministic given the seed.
    torch::manual_seed(0);
    PatchGanDiscriminator again(options(norm));
    const auto pa = again->named_parameters();
    for (const auto& p : d->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), pa[p.key()]));
  }
}

// R1 needs second derivatives through the synchronous BatchNorm: they equal torch's.
TEST(PatchGan, R1PenaltyThroughSyncBatchNormEqualsTorchBatchNorm) {
  torch::manual_seed(9);
  PatchGanDiscriminator d(options(DiscriminatorNorm::kSyncBatchNorm, 1, 16));
  // The same network with torch's BatchNorm2d.
  torch::nn::Sequential ref;
  for (const auto& m : d->named_children()) {
    for (const auto& layer : m.value()->children()) {
      if (auto* bn = layer->as<SyncBatchNorm>()) {
        torch::nn::BatchNorm2d b(torch::nn::BatchNorm2dOptions(bn->options().num_features));
        torch::NoGradGuard g;
        b->weight.copy_(bn->weight());
        b->bias.copy_(bn->bias());
        ref->push_back(b);
      } else if (auto* conv = layer->as<torch::nn::Conv2d>()) {
        ref->push_back(std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(conv->clone()));
      } else {
        ASSERT_NE(layer->as<torch::nn::LeakyReLU>(), nullptr);
        ref->push_back(torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)));
      }
    }
  }
  const at::Tensor x = torch::randn({4, 1, 28, 28});
  const auto penalty = [&](auto&& forward) {
    const at::Tensor xi = x.clone().requires_grad_(true);
    return r1Penalty(forward(xi), xi);
  };
  const at::Tensor pa = penalty([&](const at::Tensor& t) { return d->forward(t); });
  const at::Tensor pb = penalty([&](const at::Tensor& t) { return ref->forward(t); });
  EXPECT_NEAR(pa.item<double>(), pb.item<double>(), 1e-5 * std::abs(pb.item<double>()));
  pa.backward();
  pb.backward();
  const auto ra = d->parameters(), rb = ref->parameters();
  ASSERT_EQ(ra.size(), rb.size());
  for (std::size_t i = 0; i < ra.size(); ++i) {
    // The last bias does not change the gradient with respect to the images.
    ASSERT_EQ(ra[i].grad().defined(), rb[i].grad().defined()) << i;
    if (!rb[i].grad().defined()) continue;
    const double scale = rb[i].grad().abs().max().item<double>();
    EXPECT_LT((ra[i].grad() - rb[i].grad()).abs().max().item<double>(), 1e-4 * scale + 1e-9) << i;
  }
}

}  // namespace
}  // namespace tessera::models
