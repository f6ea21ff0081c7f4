#include "models/vqgan_autoencoder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "core/error.h"
#include "core/keyed_rng.h"
#include "models/parameters.h"

namespace tessera::models {
namespace {

using Sizes = std::vector<std::int64_t>;

VqganAutoencoderOptions tiny(QuantizerKind kind) {
  VqganAutoencoderOptions o = VqganAutoencoderOptions::fashionMnist();
  o.ch = 8;
  o.norm_groups = 4;
  o.z_channels = 8;
  o.embed_dim = 6;
  o.quantizer.kind = kind;
  o.quantizer.codebook_size = 16;
  o.quantizer.ema.init = CodebookInit::kRandom;
  return o;
}

TEST(VqganAutoencoder, ShapesForEveryQuantizer) {
  for (QuantizerKind kind :
       {QuantizerKind::kEma, QuantizerKind::kCodebook, QuantizerKind::kGumbel}) {
    SCOPED_TRACE(quantizerKindName(kind));
    torch::manual_seed(1);
    VqganAutoencoder model(tiny(kind));
    EXPECT_EQ(model->quantizer().kind(), kind);
    EXPECT_EQ(model->latentResolution(), 7);
    const at::Tensor images = torch::rand({2, 1, 28, 28}) * 2 - 1;
    const VqganOutput out = model->forward(images);
    EXPECT_EQ(out.reconstruction.sizes(), (Sizes{2, 1, 28, 28}));
    EXPECT_EQ(out.latents.sizes(), (Sizes{2, 6, 7, 7}));
    EXPECT_EQ(out.quant.quantized.sizes(), (Sizes{2, 6, 7, 7}));
    EXPECT_EQ(out.quant.codes.sizes(), (Sizes{2, 7, 7}));
    EXPECT_EQ(out.quant.codes.scalar_type(), at::kLong);
    EXPECT_EQ(out.quant.loss.dim(), 0);
    EXPECT_EQ(out.quant.counts.sizes(), (Sizes{16}));
    EXPECT_EQ(out.quant.counts.sum().item<float>(), 2 * 7 * 7);

    // Eval: the codes decode to the same reconstruction.
    model->eval();
    const VqganOutput ev = model->forward(images);
    EXPECT_TRUE(torch::allclose(model->decodeCodes(ev.quant.codes), ev.reconstruction, 1e-5, 1e-6));
  }
}

TEST(VqganAutoencoder, GradientsReachEncoderAndLastLayer) {
  for (QuantizerKind kind : {QuantizerKind::kCodebook, QuantizerKind::kGumbel}) {
    SCOPED_TRACE(quantizerKindName(kind));
    torch::manual_seed(2);
    VqganAutoencoder model(tiny(kind));
    const at::Tensor images = torch::rand({2, 1, 28, 28}) * 2 - 1;
    const VqganOutput out = model->forward(images, QuantizeCall{1.0, makeGenerator(5)});
    ((out.reconstruction - images).abs().mean() + out.quant.loss).backward();
    for (const auto& p : model->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
    }
    EXPECT_GT(model->lastLayerWeight().grad().abs().sum().item<double>(), 0);
    EXPECT_EQ(model->lastLayerWeight().sizes(), (Sizes{1, 8, 3, 3}));
    // The first encoder convolution learns through the straight-through estimator.
    const at::Tensor first = model->encoder()->named_parameters()["conv_in.weight"];
    EXPECT_GT(first.grad().abs().sum().item<double>(), 0);
  }
}

TEST(VqganAutoencoder, InitialisationIsDeterministicGivenTheSeed) {
  torch::manual_seed(7);
  VqganAutoencoder a(tiny(QuantizerKind::kGumbel));
  torch::manual_seed(7);
  VqganAutoencoder b(tiny(QuantizerKind::kGumbel));
  const auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  }
}

TEST(VqganAutoencoder, BlocksFollowTheDescription) {
  torch::manual_seed(3);
  // VqganDownsample: pad one row/column at the end, 3x3 stride 2: 28 -> 14 -> 7, 2s -> s.
  VqganDownsample down(4, VqganDownsampleMode::kConv);
  const at::Tensor x = torch::randn({1, 4, 28, 28});
  const at::Tensor y = down->forward(x);
  EXPECT_EQ(y.sizes(), (Sizes{1, 4, 14, 14}));
  const at::Tensor w = down->named_parameters()["conv.weight"];
  const at::Tensor b = down->named_parameters()["conv.bias"];
  // Output (i, j) reads rows 2i..2i+2 and columns 2j..2j+2 (zero beyond the end).
  const at::Tensor padded = torch::constant_pad_nd(x, {0, 1, 0, 1}, 0);
  const at::Tensor ref = torch::conv2d(padded, w, b, 2);
  EXPECT_TRUE(torch::allclose(y, ref));
  EXPECT_TRUE(torch::allclose(y.select(2, 13).select(2, 13),
                              (padded.slice(2, 26, 29).slice(3, 26, 29) * w).sum({1, 2, 3}) + b,
                              1e-5, 1e-5));
  VqganDownsample pool(4, VqganDownsampleMode::kAvgPool);
  EXPECT_TRUE(torch::allclose(pool->forward(x), torch::avg_pool2d(x, 2, 2)));
  EXPECT_TRUE(pool->parameters().empty());

  // VqganUpsample: nearest x2 then conv 3x3.
  VqganUpsample up(4);
  const at::Tensor small = torch::randn({2, 4, 5, 3});
  const at::Tensor near =
      torch::nn::functional::interpolate(small, torch::nn::functional::InterpolateFuncOptions()
                                                    .scale_factor(std::vector<double>{2, 2})
                                                    .mode(torch::kNearest));
  EXPECT_TRUE(torch::allclose(up->forward(small),
                              torch::conv2d(near, up->named_parameters()["conv.weight"],
                                            up->named_parameters()["conv.bias"], 1, 1),
                              1e-5, 1e-6));

  // Attention: one head over the positions.
  VqganAttention attn(8, 4);
  const at::Tensor h = torch::randn({2, 8, 3, 4});
  const auto p = attn->named_parameters();
  const at::Tensor n = torch::group_norm(h, 4, p["norm.weight"], p["norm.bias"], 1e-6);
  const auto proj = [&](const std::string& m, const at::Tensor& t) {
    return torch::conv2d(t, p[m + ".weight"], p[m + ".bias"]).flatten(2);  // [B, C, N]
  };
  const at::Tensor q = proj("q", n), k = proj("k", n), v = proj("v", n);
  const at::Tensor weights =
      torch::softmax(torch::einsum("bci,bcj->bij", {q, k}) / std::sqrt(8.0), 2);
  const at::Tensor mixed = torch::einsum("bij,bcj->bci", {weights, v}).reshape({2, 8, 3, 4});
  const at::Tensor want = h + torch::conv2d(mixed, p["proj_out.weight"], p["proj_out.bias"]);
  EXPECT_TRUE(torch::allclose(attn->forward(h), want, 1e-5, 1e-5));

  // ResNet block: 1x1 shortcut only when the channels change.
  EXPECT_EQ(VqganResnetBlock(8, 8, 0.0, 4)->named_parameters().find("shortcut.weight"), nullptr);
  EXPECT_EQ(VqganResnetBlock(8, 16, 0.0, 4)->named_parameters()["shortcut.weight"].sizes(),
            (Sizes{16, 8, 1, 1}));
  // GroupNorm(32, eps 1e-6, affine).
  const auto gn = vqganNorm(32, 64);
  EXPECT_EQ(gn->options.eps(), 1e-6);
  EXPECT_TRUE(gn->options.affine());
  EXPECT_THROW(vqganNorm(32, 48), c10::Error);
}

TEST(VqganAutoencoder, AttentionAtTheConfiguredResolutions) {
  VqganAutoencoderOptions o = tiny(QuantizerKind::kCodebook);
  o.attn_resolutions = {};
  o.mid_attention = false;
  VqganAutoencoder none(o);
  o.attn_resolutions = {14};
  VqganAutoencoder at14(o);
  const auto count = [](VqganAutoencoder& m) {
    int n = 0;
    for (const auto& item : m->named_modules()) {
      if (dynamic_cast<VqganAttentionImpl*>(item.value().get())) ++n;
    }
    return n;
  };
  EXPECT_EQ(count(none), 0);
  // Encoder: 1 res block at 14 -> one attention; decoder: 2 res blocks at 14 -> two.
  EXPECT_EQ(count(at14), 3);
  o.mid_attention = true;
  VqganAutoencoder with_mid(o);
  EXPECT_EQ(count(with_mid), 5);
}

TEST(VqganAutoencoder, RejectsBadOptions) {
  VqganAutoencoderOptions o = tiny(QuantizerKind::kCodebook);
  o.resolution = 30;  // not divisible by 4
  EXPECT_THROW(VqganAutoencoder{o}, c10::Error);
  EXPECT_THROW(parseVqganDownsampleMode("strided"), ConfigError);
  EXPECT_EQ(parseVqganDownsampleMode("avgpool"), VqganDownsampleMode::kAvgPool);
}

// The parameter counts README lists.
TEST(VqganAutoencoder, ParameterCounts) {
  VqganAutoencoder fmnist(VqganAutoencoderOptions::fashionMnist());
  const VqganParameterCounts f = fmnist->parameterCounts();
  std::printf("vqgan-fmnist: encoder %lld, quantizer %lld, decoder %lld, total %lld\n",
              static_cast<long long>(f.encoder), static_cast<long long>(f.quantizer),
              static_cast<long long>(f.decoder), static_cast<long long>(f.total));
  EXPECT_EQ(f.encoder + f.quantizer + f.decoder, f.total);
  EXPECT_EQ(f.total, trainableParameterCount(*fmnist));
  EXPECT_EQ(f.quantizer, 512 * 64);

  VqganAutoencoder f16(VqganAutoencoderOptions::f16ImageNet());
  const VqganParameterCounts g = f16->parameterCounts();
  std::printf("vqgan-f16-imagenet: encoder %lld, quantizer %lld, decoder %lld, total %lld\n",
              static_cast<long long>(g.encoder), static_cast<long long>(g.quantizer),
              static_cast<long long>(g.decoder), static_cast<long long>(g.total));
  EXPECT_EQ(g.quantizer, 1024 * 256);
  EXPECT_EQ(g.encoder + g.quantizer + g.decoder, g.total);
  EXPECT_EQ(f16->lastLayerWeight().sizes(), (Sizes{3, 128, 3, 3}));
  EXPECT_EQ(f16->latentResolution(), 16);
}

}  // namespace
}  // namespace tessera::models
