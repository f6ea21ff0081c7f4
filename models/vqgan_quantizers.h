// The quantizers a VQGAN chooses from in its config, behind one interface (`Quantizer`):
//
//   ema       the synchronised EMA codebook of the VQ-VAE (models/vector_quantizer.h), adapted;
//   codebook  a codebook learned by gradient (Esser et al. 2021's default):
//             loss = ||sg(z) - e||^2 + beta ||z - sg(e)||^2 (means over elements);
//   gumbel    a Gumbel-softmax assignment (Jang et al. 2017; Maddison et al. 2017): a 1x1 conv
//             gives K logits per position, q = softmax((logits + g) / T) with Gumbel noise g,
//             hard (straight-through one-hot) or soft; loss = kl_weight * KL(softmax(logits) ||
//             uniform).
//
// Every quantizer returns the straight-through quantized tensor, its loss term (weights
// included), the code of each position and the per-code counts of the call, from which
// codebookStats() gives usage, entropy and perplexity (sum the counts over ranks first for the
// global batch's values: globalCodebookStats()).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/stats_reducer.h"
#include "models/vector_quantizer.h"

namespace tessera::models {

enum class QuantizerKind { kEma, kCodebook, kGumbel };
// "ema", "codebook", "gumbel"; throws ConfigError naming the valid values otherwise.
QuantizerKind parseQuantizerKind(const std::string& name);
std::string quantizerKindName(QuantizerKind kind);

// ---- Gumbel temperature schedule: a pure function of the step -------------------------------

enum class TemperatureDecay { kConstant, kLinear, kExponential, kCosine };
// "constant", "linear", "exponential", "cosine"; throws ConfigError otherwise.
TemperatureDecay parseTemperatureDecay(const std::string& name);

// T(step) anneals from `start` at step 0 to `end` at step `steps` and stays there:
//   constant     start
//   linear       start + (end - start) * t,                 t = min(step, steps) / steps
//   exponential  start * (end / start)^t                    (geometric; start, end > 0)
//   cosine       end + (start - end) * (1 + cos(pi t)) / 2
// With steps <= 0 every schedule but constant is at `end` from step 0.
struct TemperatureSchedule {
  TemperatureDecay decay = TemperatureDecay::kExponential;
  double start = 1.0;
  double end = 1.0 / 16;
  std::int64_t steps = 0;
};
double temperatureAt(const TemperatureSchedule& schedule, std::int64_t step);

// ---- The interface ---------------------------------------------------------------------------

// Per-call inputs that only some quantizers read.
struct QuantizeCall {
  double temperature = 1.0;  // Gumbel: the softmax temperature of this call
  // Gumbel, training mode: where the noise comes from. With first_sample >= 0, sample i of the
  // call (global sample index first_sample + i) draws its uniforms from a generator keyed by
  // (noise_seed, kNoise, noise_step, first_sample + i, kGumbelNoiseStream): the draw does not
  // depend on the rank or the micro-batch that computes the sample, so 2 ranks x B draw what
  // 1 x 2B draws. Otherwise `generator` (or, without one, the global generator) fills the
  // whole batch.
  c10::optional<at::Generator> generator;
  std::int64_t first_sample = -1;
  std::uint64_t noise_seed = 0;
  std::int64_t noise_step = 0;
};
// The stream coordinate of the Gumbel noise among RngPurpose::kNoise draws (diffusion uses 0, 1).
inline constexpr std::uint64_t kGumbelNoiseStream = 7;

struct QuantizeResult {
  at::Tensor quantized;  // [B, D, h, w]: the decoder's input; forward value = the codes' vectors
                         // (gumbel soft: the soft mixture), gradient straight through
  at::Tensor loss;    // scalar: the quantizer's loss term, its weights (beta, kl_weight) included
  at::Tensor codes;   // int64 [B, h, w]
  at::Tensor counts;  // float [K]: how many positions of this call chose each code (detached)
  // The parts of `loss` for the log (detached scalars): "commitment", "codebook", "kl".
  std::vector<std::pair<std::string, at::Tensor>> terms;
};

// 0-dim float tensors on the counts' device (nothing is read to the host).
struct CodebookStats {
  at::Tensor usage;       // fraction of codes with a count > 0
  at::Tensor entropy;     // -sum p log p of the code frequencies p, in nats
  at::Tensor perplexity;  // exp(entropy): the effective number of codes used
};
CodebookStats codebookStats(const at::Tensor& counts);
// The same for the global batch: sums a copy of `counts` over ranks (one all-reduce of K
// floats; every rank calls it) first.
CodebookStats globalCodebookStats(const at::Tensor& counts, StatsReducer& reducer);

class Quantizer : public torch::nn::Module {
 public:
  // z: [B, D, h, w], D = dim(). Training mode: the gumbel quantizer adds noise and the EMA one
  // records pending statistics; eval mode: every quantizer picks its codes deterministically
  // (gumbel: argmax of the logits, hard).
  virtual QuantizeResult forward(const at::Tensor& z, const QuantizeCall& call) = 0;
  QuantizeResult forward(const at::Tensor& z) { return forward(z, QuantizeCall{}); }
  // Code vectors for indices [B, h, w] as the decoder's input [B, D, h, w].
  virtual at::Tensor lookup(const at::Tensor& codes) = 0;

  virtual QuantizerKind kind() const = 0;
  virtual std::int64_t codebookSize() const = 0;
  virtual std::int64_t dim() const = 0;

  // Steps the EMA quantizer needs from the training loop (no-ops for the others):
  // initialize() on the first global batch when !initialized(), update() once per applied
  // optimizer step, discardPending() for a skipped one. All collective: every rank calls them.
  virtual bool initialized() const { return true; }
  virtual void initialize(const at::Tensor& z, StatsReducer& reducer) {}
  virtual void update(StatsReducer& reducer, std::int64_t step) {}
  virtual void discardPending() {}
};

// ---- (a) the EMA codebook of the VQ-VAE ------------------------------------------------------

// An adapter: the VectorQuantizer is its submodule "vq" (its buffers are checkpointed with the
// model). loss = the VectorQuantizer's commitment term (beta included; the codebook itself moves
// by EMA, not by gradient).
class EmaQuantizerImpl : public Quantizer {
 public:
  explicit EmaQuantizerImpl(const VectorQuantizerOptions& options);
  using Quantizer::forward;
  QuantizeResult forward(const at::Tensor& z, const QuantizeCall& call) override;
  at::Tensor lookup(const at::Tensor& codes) override;
  QuantizerKind kind() const override { return QuantizerKind::kEma; }
  std::int64_t codebookSize() const override { return vq_->options().codebook_size; }
  std::int64_t dim() const override { return vq_->options().code_dim; }
  bool initialized() const override { return vq_->initialized(); }
  void initialize(const at::Tensor& z, StatsReducer& reducer) override;
  void update(StatsReducer& reducer, std::int64_t step) override;
  void discardPending() override;

  VectorQuantizer& ema() { return vq_; }

 private:
  VectorQuantizer vq_{nullptr};
};
TORCH_MODULE(EmaQuantizer);

// ---- (b) a codebook learned by gradient ------------------------------------------------------

struct CodebookQuantizerOptions {
  std::int64_t codebook_size = 1024;  // K
  std::int64_t dim = 256;             // D
  double beta = 0.25;                 // on the commitment term ||z - sg(e)||^2
};

// Parameter "embedding" [K, D], initialised U(-1/K, 1/K) from the global generator. Nearest code
// by squared distance in fp32 (matmul form).
class CodebookQuantizerImpl : public Quantizer {
 public:
  explicit CodebookQuantizerImpl(const CodebookQuantizerOptions& options);
  using Quantizer::forward;
  QuantizeResult forward(const at::Tensor& z, const QuantizeCall& call) override;
  at::Tensor lookup(const at::Tensor& codes) override;
  QuantizerKind kind() const override { return QuantizerKind::kCodebook; }
  std::int64_t codebookSize() const override { return options_.codebook_size; }
  std::int64_t dim() const override { return options_.dim; }

  const at::Tensor& embedding() const { return embedding_; }
  const CodebookQuantizerOptions& options() const { return options_; }

 private:
  CodebookQuantizerOptions options_;
  at::Tensor embedding_;
};
TORCH_MODULE(CodebookQuantizer);

// ---- (c) Gumbel-softmax ------------------------------------------------------------------------

struct GumbelQuantizerOptions {
  std::int64_t codebook_size = 1024;  // K
  std::int64_t dim = 256;             // D: channels of the input and of the code vectors
  double kl_weight = 5e-4;            // on KL(softmax(logits) || uniform over K)
  bool straight_through = true;       // hard: one-hot forward, soft gradient; false: soft mixture
};

// Submodule "proj" (1x1 conv D -> K, torch's default init) and parameter "embedding" [K, D]
// (N(0, 1), as an embedding table), both from the global generator.
// Training: y = softmax((logits + g) / T), g = -log(-log(u)), u ~ U(0, 1) from call.generator;
// codes = argmax y; hard: quantized = e[codes] + (y·sg(e) - sg(y·sg(e))): bitwise the codes'
// vectors forward, the gradient of the soft mixture backward (to the logits through y, to the
// chosen codes' vectors directly). Soft: quantized = y·e. Eval: codes = argmax logits, hard.
// loss = kl_weight * mean over positions of sum_k p_k log(K p_k), p = softmax(logits).
class GumbelQuantizerImpl : public Quantizer {
 public:
  explicit GumbelQuantizerImpl(const GumbelQuantizerOptions& options);
  using Quantizer::forward;
  QuantizeResult forward(const at::Tensor& z, const QuantizeCall& call) override;
  at::Tensor lookup(const at::Tensor& codes) override;
  QuantizerKind kind() const override { return QuantizerKind::kGumbel; }
  std::int64_t codebookSize() const override { return options_.codebook_size; }
  std::int64_t dim() const override { return options_.dim; }

  // The logits [B, K, h, w] of an input.
  at::Tensor logits(const at::Tensor& z);
  const at::Tensor& embedding() const { return embedding_; }
  const GumbelQuantizerOptions& options() const { return options_; }

 private:
  GumbelQuantizerOptions options_;
  torch::nn::Conv2d proj_{nullptr};
  at::Tensor embedding_;
};
TORCH_MODULE(GumbelQuantizer);

// ---- Chosen in config ------------------------------------------------------------------------

struct QuantizerOptions {
  QuantizerKind kind = QuantizerKind::kCodebook;
  std::int64_t codebook_size = 1024;  // n_embed
  double beta = 0.25;                 // ema, codebook: the commitment weight
  // gumbel
  double kl_weight = 5e-4;
  bool straight_through = true;
  TemperatureSchedule temperature;  // read by the caller: temperatureAt(temperature, step)
  // ema: every other VectorQuantizerOptions field (codebook_size, code_dim and beta are set from
  // the fields above and the dimension).
  VectorQuantizerOptions ema;
};

// The quantizer of `options` for `dim`-channel inputs.
std::shared_ptr<Quantizer> makeQuantizer(const QuantizerOptions& options, std::int64_t dim);

}  // namespace tessera::models
