#include "models/vqgan_quantizers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "core/keyed_rng.h"

namespace tessera::models {
namespace {

using Sizes = std::vector<std::int64_t>;

constexpr double kPi = 3.14159265358979323846;

double item(const at::Tensor& t) {
  return t.item<double>();
}

// ---- Temperature schedule --------------------------------------------------------------------

TEST(TemperatureSchedule, AnnealsFromStartToEnd) {
  TemperatureSchedule s;
  s.start = 2.0;
  s.end = 0.125;
  s.steps = 1000;
  s.decay = TemperatureDecay::kExponential;
  EXPECT_DOUBLE_EQ(temperatureAt(s, 0), 2.0);
  EXPECT_NEAR(temperatureAt(s, 500), 0.5, 1e-12);  // geometric mean of 2 and 1/8
  EXPECT_NEAR(temperatureAt(s, 250), 2.0 * std::pow(1.0 / 16, 0.25), 1e-12);
  EXPECT_DOUBLE_EQ(temperatureAt(s, 1000), 0.125);
  EXPECT_DOUBLE_EQ(temperatureAt(s, 5000), 0.125);
  EXPECT_DOUBLE_EQ(temperatureAt(s, -3), 2.0);
  for (std::int64_t step = 1; step <= 1000; ++step) {
    ASSERT_LT(temperatureAt(s, step), temperatureAt(s, step - 1));  // strictly decreasing
  }

  s.decay = TemperatureDecay::kLinear;
  EXPECT_DOUBLE_EQ(temperatureAt(s, 0), 2.0);
  EXPECT_NEAR(temperatureAt(s, 500), 1.0625, 1e-12);
  EXPECT_DOUBLE_EQ(temperatureAt(s, 1000), 0.125);
  EXPECT_DOUBLE_EQ(temperatureAt(s, 1001), 0.125);

  s.decay = TemperatureDecay::kCosine;
  EXPECT_DOUBLE_EQ(temperatureAt(s, 0), 2.0);
  EXPECT_NEAR(temperatureAt(s, 500), 1.0625, 1e-12);
  EXPECT_NEAR(temperatureAt(s, 250), 0.125 + 1.875 * (1 + std::cos(kPi / 4)) / 2, 1e-12);
  EXPECT_DOUBLE_EQ(temperatureAt(s, 2000), 0.125);

  s.decay = TemperatureDecay::kConstant;
  EXPECT_DOUBLE_EQ(temperatureAt(s, 0), 2.0);
  EXPECT_DOUBLE_EQ(temperatureAt(s, 5000), 2.0);

  s.decay = TemperatureDecay::kExponential;
  s.steps = 0;
  EXPECT_DOUBLE_EQ(temperatureAt(s, 0), 0.125);

  EXPECT_EQ(parseTemperatureDecay("cosine"), TemperatureDecay::kCosine);
  EXPECT_THROW(parseTemperatureDecay("step"), ConfigError);
}

// ---- Codebook statistics ---------------------------------------------------------------------

TEST(CodebookStats, UsageEntropyPerplexity) {
  const CodebookStats uniform = codebookStats(torch::full({8}, 3.0));
  EXPECT_NEAR(item(uniform.usage), 1.0, 1e-7);
  EXPECT_NEAR(item(uniform.entropy), std::log(8.0), 1e-6);
  EXPECT_NEAR(item(uniform.perplexity), 8.0, 1e-5);

  const CodebookStats one = codebookStats(torch::tensor({0.0f, 5.0f, 0.0f, 0.0f}));
  EXPECT_NEAR(item(one.usage), 0.25, 1e-7);
  EXPECT_NEAR(item(one.entropy), 0.0, 1e-7);
  EXPECT_NEAR(item(one.perplexity), 1.0, 1e-7);

  const CodebookStats half = codebookStats(torch::tensor({1.0f, 1.0f, 2.0f, 0.0f}));
  const double h = -(0.25 * std::log(0.25) * 2 + 0.5 * std::log(0.5));
  EXPECT_NEAR(item(half.entropy), h, 1e-6);
  EXPECT_NEAR(item(half.perplexity), std::exp(h), 1e-5);
  EXPECT_NEAR(item(half.usage), 0.75, 1e-7);

  LocalStatsReducer local;
  EXPECT_NEAR(item(globalCodebookStats(torch::full({8}, 3.0), local).perplexity), 8.0, 1e-5);
}

// ---- Codebook learned by gradient ------------------------------------------------------------

TEST(CodebookQuantizer, NearestCodesStraightThroughAndLoss) {
  torch::manual_seed(11);
  CodebookQuantizerOptions o;
  o.codebook_size = 10;
  o.dim = 4;
  o.beta = 0.25;
  CodebookQuantizer vq(o);
  {
    torch::NoGradGuard g;
    vq->embedding().normal_();  // spread the codes so that several are chosen
  }
  const at::Tensor z = torch::randn({3, 4, 5, 6}).requires_grad_(true);
  const QuantizeResult r = vq->forward(z);
  EXPECT_EQ(r.codes.sizes(), (Sizes{3, 5, 6}));

  // Brute force: nearest code per position; the forward value is that code's vector.
  const at::Tensor flat = z.detach().permute({0, 2, 3, 1}).reshape({-1, 4});
  const at::Tensor dist = (flat.unsqueeze(1) - vq->embedding().detach().unsqueeze(0)).pow(2).sum(2);
  EXPECT_TRUE(torch::equal(r.codes.reshape({-1}), dist.argmin(1)));
  const at::Tensor vectors = vq->embedding().detach().index_select(0, r.codes.reshape({-1}));
  EXPECT_TRUE(torch::allclose(r.quantized.detach().permute({0, 2, 3, 1}).reshape({-1, 4}), vectors,
                              1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(vq->lookup(r.codes), vectors.view({3, 5, 6, 4}).permute({0, 3, 1, 2})));

  // Loss = mean (e - z)^2 * (1 + beta).
  const double mse = item((flat - vectors).pow(2).mean());
  EXPECT_NEAR(item(r.loss), 1.25 * mse, 1e-6);
  EXPECT_EQ(r.terms.size(), 2u);
  EXPECT_EQ(item(r.counts.sum()), 90);

  // Straight through: d sum(quantized * g) / dz = g; the codebook term pulls the chosen codes.
  const at::Tensor g = torch::randn({3, 4, 5, 6});
  (r.quantized * g).sum().backward();
  EXPECT_TRUE(torch::allclose(z.grad(), g));
  EXPECT_FALSE(vq->embedding().grad().defined());  // the forward value's path only reaches z
  z.grad().zero_();
  vq->forward(z).loss.backward();
  // d/dz: beta * 2 (z - e) / n; d/de_k: sum over positions with code k of 2 (e_k - z) / n.
  const double n = static_cast<double>(z.numel());
  const at::Tensor dz = 0.25 * 2 * (flat - vectors) / n;
  EXPECT_TRUE(torch::allclose(z.grad().permute({0, 2, 3, 1}).reshape({-1, 4}), dz, 1e-5, 1e-7));
  const at::Tensor de =
      torch::zeros({10, 4}).index_add_(0, r.codes.reshape({-1}), 2 * (vectors - flat) / n);
  EXPECT_TRUE(torch::allclose(vq->embedding().grad(), de, 1e-5, 1e-7));
}

TEST(CodebookQuantizer, InitialisedUniformInPlusMinusOneOverK) {
  torch::manual_seed(1);
  CodebookQuantizerOptions o;
  o.codebook_size = 512;
  o.dim = 64;
  CodebookQuantizer vq(o);
  EXPECT_LE(item(vq->embedding().abs().max()), 1.0 / 512);
  EXPECT_GT(item(vq->embedding().abs().max()), 0.99 / 512);
  torch::manual_seed(1);
  CodebookQuantizer again(o);
  EXPECT_TRUE(torch::equal(vq->embedding(), again->embedding()));
}

// ---- Gumbel-softmax --------------------------------------------------------------------------

GumbelQuantizer gumbel(bool hard, std::int64_t k = 12, std::int64_t d = 5) {
  torch::manual_seed(5);
  GumbelQuantizerOptions o;
  o.codebook_size = k;
  o.dim = d;
  o.straight_through = hard;
  o.kl_weight = 0.1;
  return GumbelQuantizer(o);
}

TEST(GumbelQuantizer, HardForwardIsACodebookVectorAndGradientsReachTheLogits) {
  GumbelQuantizer q = gumbel(true);
  const at::Tensor z = torch::randn({2, 5, 3, 4}).requires_grad_(true);
  const QuantizeResult r =
      q->forward(z, QuantizeCall{0.7, makeGenerator(rngKey(1, RngPurpose::kTest, 3))});
  ASSERT_EQ(r.quantized.sizes(), (Sizes{2, 5, 3, 4}));
  // Bitwise the chosen codes' vectors.
  EXPECT_TRUE(torch::equal(r.quantized.detach(), q->lookup(r.codes).detach()));
  EXPECT_EQ(item(r.counts.sum()), 24);

  const at::Tensor g = torch::randn({2, 5, 3, 4});
  (r.quantized * g).sum().backward();
  const at::Tensor proj_grad = q->named_parameters()["proj.weight"].grad();
  ASSERT_TRUE(proj_grad.defined());
  EXPECT_GT(item(proj_grad.abs().sum()), 0);  // through the logits
  EXPECT_GT(item(z.grad().abs().sum()), 0);   // and on to the encoder
  // The codebook learns only where it was chosen (the forward value), like the one-hot form.
  const at::Tensor used =
      torch::zeros({12}, torch::kBool).index_fill_(0, r.codes.reshape({-1}), true);
  const at::Tensor row_grad = q->embedding().grad().abs().sum(1);
  EXPECT_TRUE(torch::equal(row_grad > 0, used));
}

// The straight-through residual gives the logits exactly the gradient of the soft mixture.
TEST(GumbelQuantizer, HardGradientEqualsSoftGradient) {
  const at::Tensor z = torch::randn({2, 5, 3, 4});
  const at::Tensor g = torch::randn({2, 5, 3, 4});
  at::Tensor grads[2];
  for (bool hard : {true, false}) {
    GumbelQuantizer q = gumbel(hard);
    const at::Tensor zi = z.clone().requires_grad_(true);
    const QuantizeResult r = q->forward(zi, QuantizeCall{1.5, makeGenerator(99)});
    if (!hard) {  // soft: a convex mixture of codes
      EXPECT_FALSE(torch::equal(r.quantized.detach(), q->lookup(r.codes).detach()));
    }
    (r.quantized * g).sum().backward();
    grads[hard] = q->named_parameters()["proj.weight"].grad().clone();
  }
  EXPECT_TRUE(torch::allclose(grads[0], grads[1], 1e-5, 1e-6));
}

TEST(GumbelQuantizer, NoiseComesFromTheGivenGenerator) {
  GumbelQuantizer q = gumbel(true, 64, 4);
  const at::Tensor z = torch::randn({4, 4, 6, 6}) * 0.01;  // nearly uniform logits: noise decides
  const auto codes = [&](std::uint64_t key) {
    torch::NoGradGuard no_grad;
    return q->forward(z, QuantizeCall{1.0, makeGenerator(key)}).codes;
  };
  EXPECT_TRUE(torch::equal(codes(7), codes(7)));
  EXPECT_FALSE(torch::equal(codes(7), codes(8)));
  // Eval: argmax of the logits, whatever the generator.
  q->eval();
  const at::Tensor a = codes(7), b = codes(8);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(torch::equal(a, q->logits(z).argmax(1)));
}

// Keyed by the global sample index: a batch of 4 draws what two calls of 2 samples starting at
// samples 0 and 2 draw (2 ranks x 2 against 1 x 4), and the step and the seed change the draw.
TEST(GumbelQuantizer, NoiseKeyedByGlobalSampleIndex) {
  GumbelQuantizer q = gumbel(true, 64, 4);
  const at::Tensor z = torch::randn({4, 4, 6, 6}) * 0.01;  // nearly uniform logits: noise decides
  torch::NoGradGuard no_grad;
  const auto draw = [&](const at::Tensor& x, std::int64_t first, std::int64_t step,
                        std::uint64_t seed) {
    QuantizeCall call;
    call.first_sample = first;
    call.noise_step = step;
    call.noise_seed = seed;
    return q->forward(x, call);
  };
  const QuantizeResult all = draw(z, 0, 5, 1);
  const QuantizeResult a = draw(z.narrow(0, 0, 2), 0, 5, 1), b = draw(z.narrow(0, 2, 2), 2, 5, 1);
  EXPECT_TRUE(torch::equal(all.codes, at::cat({a.codes, b.codes})));
  EXPECT_TRUE(torch::equal(all.quantized, at::cat({a.quantized, b.quantized})));
  EXPECT_FALSE(torch::equal(all.codes, draw(z, 0, 6, 1).codes));
  EXPECT_FALSE(torch::equal(all.codes, draw(z, 0, 5, 2).codes));
  // A sample's draw is its own: sample 2 at position 0 of a call starting at 2.
  EXPECT_TRUE(torch::equal(all.codes[2], draw(z.narrow(0, 2, 1), 2, 5, 1).codes[0]));
}

TEST(GumbelQuantizer, LowTemperatureSamplesTheArgmaxOfNoisyLogits) {
  GumbelQuantizer q = gumbel(true);
  const at::Tensor z = torch::randn({2, 5, 3, 4});
  torch::NoGradGuard no_grad;
  const QuantizeResult r = q->forward(z, QuantizeCall{0.01, makeGenerator(3)});
  // The same noise drawn by hand.
  at::Tensor u = at::empty({2, 12, 3, 4});
  u.uniform_(0, 1, makeGenerator(3));
  const at::Tensor noisy = q->logits(z) - (-u.log()).log();
  EXPECT_TRUE(torch::equal(r.codes, noisy.argmax(1)));
}

TEST(GumbelQuantizer, KlToUniformPrior) {
  GumbelQuantizer q = gumbel(true);
  const at::Tensor z = torch::randn({2, 5, 3, 4});
  const QuantizeResult r = q->forward(z, QuantizeCall{1.0, makeGenerator(1)});
  const at::Tensor p = torch::softmax(q->logits(z), 1);
  const double kl = item((p * (p * 12).log()).sum(1).mean());
  EXPECT_NEAR(item(r.loss), 0.1 * kl, 1e-6);
  EXPECT_GT(kl, 0);
  ASSERT_EQ(r.terms.size(), 1u);
  EXPECT_EQ(r.terms[0].first, "kl");

  // Uniform logits: no divergence.
  {
    torch::NoGradGuard g;
    for (auto& t : q->named_parameters()) {
      if (t.key().rfind("proj", 0) == 0) t.value().zero_();
    }
  }
  EXPECT_NEAR(item(q->forward(z, QuantizeCall{1.0, makeGenerator(1)}).loss), 0.0, 1e-7);
}

// ---- EMA adapter and the factory -------------------------------------------------------------

TEST(EmaQuantizer, AdaptsTheVectorQuantizer) {
  VectorQuantizerOptions o;
  o.codebook_size = 16;
  o.code_dim = 4;
  o.init = CodebookInit::kKMeans;
  o.kmeans_iters = 2;
  EmaQuantizer q(o);
  EXPECT_FALSE(q->initialized());
  LocalStatsReducer local;
  const at::Tensor z = torch::randn({2, 4, 5, 5}).requires_grad_(true);
  q->initialize(z.detach(), local);
  EXPECT_TRUE(q->initialized());
  const QuantizeResult r = q->forward(z);
  EXPECT_TRUE(torch::allclose(r.quantized.detach(), q->lookup(r.codes)));
  EXPECT_EQ(item(r.counts.sum()), 50);
  EXPECT_EQ(r.terms[0].first, "commitment");
  (r.quantized.sum() + r.loss).backward();
  EXPECT_TRUE(z.grad().defined());
  const at::Tensor before = q->ema()->codebook().clone();
  q->update(local, 0);
  EXPECT_FALSE(torch::equal(before, q->ema()->codebook()));
  q->forward(z.detach());
  q->discardPending();
}

TEST(MakeQuantizer, EveryKind) {
  QuantizerOptions o;
  o.codebook_size = 32;
  for (const std::string name : {"ema", "codebook", "gumbel"}) {
    o.kind = parseQuantizerKind(name);
    const std::shared_ptr<Quantizer> q = makeQuantizer(o, 7);
    EXPECT_EQ(quantizerKindName(q->kind()), name);
    EXPECT_EQ(q->codebookSize(), 32);
    EXPECT_EQ(q->dim(), 7);
  }
  EXPECT_THROW(parseQuantizerKind("rq"), ConfigError);
}

}  // namespace
}  // namespace tessera::models
