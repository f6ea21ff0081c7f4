#include "models/vqgan_quantizers.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/keyed_rng.h"

namespace tessera::models {
namespace {

constexpr double kPi = 3.14159265358979323846;

void checkInput(const char* who, const at::Tensor& z, std::int64_t dim) {
  TORCH_CHECK(z.dim() == 4 && z.size(1) == dim, who, ": expected [B, ", dim, ", h, w], got ",
              z.sizes());
}

// Per-code counts [K] without a device read (bincount reads the largest index to the host).
// Sums of ones: exact, whatever the order, below 2^24 positions.
at::Tensor countCodes(const at::Tensor& codes, std::int64_t k) {
  const at::Tensor flat = codes.reshape({-1});
  const auto options = codes.options().dtype(at::kFloat);
  return at::zeros({k}, options).index_add_(0, flat, at::ones({flat.numel()}, options));
}

// [B, D, h, w] -> [B*h*w, D]
at::Tensor flattenPositions(const at::Tensor& z) {
  return z.permute({0, 2, 3, 1}).reshape({-1, z.size(1)});
}

// Rows of `table` [K, D] for codes [B, h, w], as [B, D, h, w].
at::Tensor gather(const at::Tensor& table, const at::Tensor& codes) {
  const auto s = codes.sizes();
  return table.index_select(0, codes.reshape({-1}))
      .view({s[0], s[1], s[2], table.size(1)})
      .permute({0, 3, 1, 2})
      .contiguous();
}

}  // namespace

QuantizerKind parseQuantizerKind(const std::string& name) {
  if (name == "ema") return QuantizerKind::kEma;
  if (name == "codebook") return QuantizerKind::kCodebook;
  if (name == "gumbel") return QuantizerKind::kGumbel;
  throw ConfigError("quantizer '" + name + "' is not one of: ema, codebook, gumbel");
}

std::string quantizerKindName(QuantizerKind kind) {
  switch (kind) {
    case QuantizerKind::kEma:
      return "ema";
    case QuantizerKind::kCodebook:
      return "codebook";
    case QuantizerKind::kGumbel:
      return "gumbel";
  }
  return "?";
}

TemperatureDecay parseTemperatureDecay(const std::string& name) {
  if (name == "constant") return TemperatureDecay::kConstant;
  if (name == "linear") return TemperatureDecay::kLinear;
  if (name == "exponential") return TemperatureDecay::kExponential;
  if (name == "cosine") return TemperatureDecay::kCosine;
  throw ConfigError("temperature decay '" + name +
                    "' is not one of: constant, linear, exponential, cosine");
}

double temperatureAt(const TemperatureSchedule& s, std::int64_t step) {
  if (s.decay == TemperatureDecay::kConstant) return s.start;
  const double t = s.steps <= 0 ? 1.0
                                : static_cast<double>(std::clamp<std::int64_t>(step, 0, s.steps)) /
                                      static_cast<double>(s.steps);
  switch (s.decay) {
    case TemperatureDecay::kLinear:
      return t >= 1.0 ? s.end : s.start + (s.end - s.start) * t;
    case TemperatureDecay::kExponential:
      TORCH_CHECK(s.start > 0 && s.end > 0,
                  "exponential temperature schedule: start and end must be > 0");
      return t >= 1.0 ? s.end : s.start * std::pow(s.end / s.start, t);
    case TemperatureDecay::kCosine:
      return t >= 1.0 ? s.end : s.end + (s.start - s.end) * 0.5 * (1 + std::cos(kPi * t));
    case TemperatureDecay::kConstant:
      break;
  }
  return s.start;
}

CodebookStats codebookStats(const at::Tensor& counts) {
  const at::Tensor c = counts.detach().to(at::kFloat);
  const at::Tensor p = c / c.sum().clamp_min(1e-12);
  // 0 log 0 = 0: p where p > 0, else 1 (whose log is 0).
  const at::Tensor logp = at::where(p > 0, p, at::ones_like(p)).log();
  CodebookStats s;
  s.usage = (c > 0).to(at::kFloat).mean();
  s.entropy = -(p * logp).sum();
  s.perplexity = s.entropy.exp();
  return s;
}

CodebookStats globalCodebookStats(const at::Tensor& counts, StatsReducer& reducer) {
  at::Tensor total = counts.detach().to(at::kFloat).clone().contiguous();
  reducer.sumInPlace(total);
  return codebookStats(total);
}

// ---- EMA -------------------------------------------------------------------------------------

EmaQuantizerImpl::EmaQuantizerImpl(const VectorQuantizerOptions& options) {
  vq_ = register_module("vq", VectorQuantizer(options));
}

QuantizeResult EmaQuantizerImpl::forward(const at::Tensor& z, const QuantizeCall&) {
  QuantizerOutput out = vq_->forward(z);
  QuantizeResult r;
  r.quantized = out.quantized;
  r.loss = out.commitment;
  r.codes = out.codes;
  r.counts = countCodes(out.codes, codebookSize());
  r.terms = {{"commitment", out.commitment.detach()}};
  return r;
}

at::Tensor EmaQuantizerImpl::lookup(const at::Tensor& codes) {
  return vq_->lookup(codes);
}

void EmaQuantizerImpl::initialize(const at::Tensor& z, StatsReducer& reducer) {
  vq_->initialize(z, reducer);
}

void EmaQuantizerImpl::update(StatsReducer& reducer, std::int64_t step) {
  vq_->update(reducer, step);
}

void EmaQuantizerImpl::discardPending() {
  vq_->discardPending();
}

// ---- Codebook learned by gradient ------------------------------------------------------------

CodebookQuantizerImpl::CodebookQuantizerImpl(const CodebookQuantizerOptions& options)
    : options_(options) {
  TORCH_CHECK(options.codebook_size >= 2, "CodebookQuantizer: codebook_size must be >= 2");
  TORCH_CHECK(options.dim >= 1, "CodebookQuantizer: dim must be >= 1");
  const double k = static_cast<double>(options.codebook_size);
  embedding_ = register_parameter(
      "embedding", torch::empty({options.codebook_size, options.dim}).uniform_(-1.0 / k, 1.0 / k));
}

QuantizeResult CodebookQuantizerImpl::forward(const at::Tensor& z, const QuantizeCall&) {
  checkInput("CodebookQuantizer", z, options_.dim);
  at::Tensor codes;
  {
    torch::NoGradGuard no_grad;
    const at::Tensor flat = flattenPositions(z).to(at::kFloat);
    const at::Tensor e = embedding_.to(at::kFloat);
    // ||e||^2 - 2 z.e (+ ||z||^2, the same for every code)
    const at::Tensor scores = at::addmm(e.pow(2).sum(1).unsqueeze(0), flat, e.t(), 1, -2);
    codes = scores.argmin(1).view({z.size(0), z.size(2), z.size(3)});
  }
  const at::Tensor q = gather(embedding_, codes).to(z.scalar_type());
  const at::Tensor codebook = (q - z.detach()).pow(2).mean();
  const at::Tensor commitment = (z - q.detach()).pow(2).mean();
  QuantizeResult r;
  // Forward: exactly the code vectors (z - sg(z) is 0); backward: the identity to z.
  r.quantized = q.detach() + (z - z.detach());
  r.loss = codebook + options_.beta * commitment;
  r.codes = codes;
  r.counts = countCodes(codes, options_.codebook_size);
  r.terms = {{"codebook", codebook.detach()}, {"commitment", commitment.detach()}};
  return r;
}

at::Tensor CodebookQuantizerImpl::lookup(const at::Tensor& codes) {
  return gather(embedding_, codes);
}

// ---- Gumbel-softmax --------------------------------------------------------------------------

GumbelQuantizerImpl::GumbelQuantizerImpl(const GumbelQuantizerOptions& options)
    : options_(options) {
  TORCH_CHECK(options.codebook_size >= 2, "GumbelQuantizer: codebook_size must be >= 2");
  TORCH_CHECK(options.dim >= 1, "GumbelQuantizer: dim must be >= 1");
  proj_ = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.dim, options.codebook_size, 1)));
  embedding_ = register_parameter("embedding", torch::randn({options.codebook_size, options.dim}));
}

at::Tensor GumbelQuantizerImpl::logits(const at::Tensor& z) {
  checkInput("GumbelQuantizer", z, options_.dim);
  return proj_->forward(z);
}

QuantizeResult GumbelQuantizerImpl::forward(const at::Tensor& z, const QuantizeCall& call) {
  // Softmax, KL and the noise in fp32 even under mixed precision.
  const at::Tensor lg = logits(z).to(at::kFloat);  // [B, K, h, w]
  const std::int64_t k = options_.codebook_size;
  QuantizeResult r;
  const at::Tensor e = embedding_.to(at::kFloat);
  if (is_training()) {
    TORCH_CHECK(call.temperature > 0, "GumbelQuantizer: temperature must be > 0, got ",
                call.temperature);
    at::Tensor u = at::empty_like(lg, at::MemoryFormat::Contiguous);
    if (call.first_sample >= 0) {
      for (std::int64_t i = 0; i < u.size(0); ++i) {
        const at::Generator gen = makeGenerator(
            rngKey(call.noise_seed, RngPurpose::kNoise, static_cast<std::uint64_t>(call.noise_step),
                   static_cast<std::uint64_t>(call.first_sample + i), kGumbelNoiseStream),
            u.device());
        u[i].uniform_(0, 1, gen);
      }
    } else {
      u.uniform_(0, 1, call.generator);
    }
    // u in [tiny, 1): -log(u) in (0, 88], so the noise is finite.
    const at::Tensor g = -(-u.clamp_min(std::numeric_limits<float>::min()).log()).log();
    const at::Tensor y = at::softmax((lg + g) / call.temperature, 1);  // [B, K, h, w]
    r.codes = y.argmax(1);
    // sum_k y_k e_k at every position: [B, D, h, w]
    const auto mix = [](const at::Tensor& w, const at::Tensor& table) {
      return at::einsum("bkhw,kd->bdhw", {w, table});
    };
    if (options_.straight_through) {
      const at::Tensor soft = mix(y, e.detach());
      r.quantized = gather(e, r.codes) + (soft - soft.detach());
    } else {
      r.quantized = mix(y, e);
    }
  } else {
    r.codes = lg.argmax(1);
    r.quantized = gather(e, r.codes);
  }
  r.quantized = r.quantized.to(z.scalar_type());
  const at::Tensor logp = at::log_softmax(lg, 1);
  const at::Tensor kl = (logp.exp() * (logp + std::log(static_cast<double>(k)))).sum(1).mean();
  r.loss = options_.kl_weight * kl;
  r.counts = countCodes(r.codes, k);
  r.terms = {{"kl", kl.detach()}};
  return r;
}

at::Tensor GumbelQuantizerImpl::lookup(const at::Tensor& codes) {
  return gather(embedding_, codes);
}

// ---- Factory ---------------------------------------------------------------------------------

std::shared_ptr<Quantizer> makeQuantizer(const QuantizerOptions& o, std::int64_t dim) {
  switch (o.kind) {
    case QuantizerKind::kEma: {
      VectorQuantizerOptions v = o.ema;
      v.codebook_size = o.codebook_size;
      v.code_dim = dim;
      v.beta = o.beta;
      return std::make_shared<EmaQuantizerImpl>(v);
    }
    case QuantizerKind::kCodebook: {
      CodebookQuantizerOptions c;
      c.codebook_size = o.codebook_size;
      c.dim = dim;
      c.beta = o.beta;
      return std::make_shared<CodebookQuantizerImpl>(c);
    }
    case QuantizerKind::kGumbel: {
      GumbelQuantizerOptions g;
      g.codebook_size = o.codebook_size;
      g.dim = dim;
      g.kl_weight = o.kl_weight;
      g.straight_through = o.straight_through;
      return std::make_shared<GumbelQuantizerImpl>(g);
    }
  }
  throw ConfigError("makeQuantizer: unknown quantizer kind");
}

}  // namespace tessera::models
