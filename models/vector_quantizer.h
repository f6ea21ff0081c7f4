// Vector quantizer with an EMA codebook (van den Oord et al. 2017, appendix A.1) whose
// statistics are summed over every data-parallel rank before each update, so that every rank
// holds the codebook a single process would compute on the global batch.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "models/stats_reducer.h"

namespace tessera::models {

enum class CodebookInit { kRandom, kEncoder, kKMeans };

struct VectorQuantizerOptions {
  std::int64_t codebook_size = 512;  // K
  std::int64_t code_dim = 64;        // D: channels of the encoder output
  std::int64_t lookup_dim = 0;       // >0: search and store codes in a projected dimension
  bool l2_normalize = false;         // codes and inputs on the unit sphere (cosine distance)
  double beta = 0.25;                // commitment weight on ||z_e - sg(q)||^2
  double decay = 0.99;               // EMA decay of counts and sums
  double eps = 1e-5;                 // Laplace smoothing of counts
  CodebookInit init = CodebookInit::kKMeans;
  int kmeans_iters = 10;
  // Dead-code restarts: every `restart_every` steps, codes whose usage EMA (horizon
  // restart_every steps) is below restart_threshold times the expected usage (N/K per step) are
  // replaced by encoder outputs. Relative to N/K, the rule does not change with the world size.
  double restart_threshold = 0.03;
  std::int64_t restart_every = 100;
  std::int64_t usage_window = 100;
  std::uint64_t seed = 0;
};

struct QuantizerOutput {
  at::Tensor quantized;   // [B, D, H, W]: z_e + sg(q - z_e) (straight-through)
  at::Tensor commitment;  // scalar: beta * mean((z_e - sg(q))^2)
  at::Tensor codes;       // int64 [B, H, W]
};

// Codebook health over the last complete usage window (or the current one before the first).
struct CodebookHealth {
  double usage = 0;           // fraction of codes used in the window
  double perplexity = 0;      // exp(entropy) of code frequencies in the window
  std::int64_t dead = 0;      // codes whose usage is below the restart threshold now
  std::int64_t restarts = 0;  // codes restarted since the start of training
};

class VectorQuantizerImpl : public torch::nn::Module {
 public:
  explicit VectorQuantizerImpl(const VectorQuantizerOptions& options);

  // Nearest codes by squared distance (fp32, matmul form). In training mode, also records this
  // call's per-code counts and sums (and the inputs, for restarts) as pending statistics.
  QuantizerOutput forward(const at::Tensor& z_e);

  // Code vectors for indices [B, h, w] as the decoder's input [B, D, h, w].
  at::Tensor lookup(const at::Tensor& codes);

  // Whether the codebook has been set from encoder outputs. Reads a host-side copy of the
  // `initialized` buffer, refreshed from the buffer (one device read) only when the buffer's
  // version counter changed: any in-place write to it (initialize(), a checkpoint restored with
  // copy_ as trainer/state_io.cpp's restoreModules does) is seen. Writes that bypass the version
  // counter (through .data(), set_data() or a raw pointer) are not.
  bool initialized() const;
  // Sets the codebook from encoder outputs of the first global batch (z_e: [B, D, H, W] of this
  // rank). Every rank must call it in the same step; the result is identical on all ranks. It
  // all-gathers every rank's outputs (k-means++ needs them all): bytes that grow with the world
  // size, once per run.
  void initialize(const at::Tensor& z_e, StatsReducer& reducer);

  // The EMA update for an optimizer step: sums the pending statistics over ranks (one packed
  // all-reduce), updates counts, sums and codes, the usage window, and restarts dead codes every
  // restart_every steps with encoder outputs of the global batch chosen identically on all ranks
  // and at every world size. A restart moves num_dead x D floats plus 16 bytes whatever the
  // world size (plus 8 bytes a rank when the ranks' batches differ in size). Every rank calls it
  // once per step, after the step was agreed finite. Waits for the device only on restart steps.
  void update(StatsReducer& reducer, std::int64_t step);
  // Drops pending statistics (a skipped step).
  void discardPending();

  // Compares a hash of the codebook buffers across ranks. Returns false (and makes every rank
  // adopt rank 0's buffers) on a mismatch; the caller reports it.
  bool checkReplicated(StatsReducer& reducer);
  std::uint64_t stateHash() const;

  CodebookHealth health() const;
  const VectorQuantizerOptions& options() const { return options_; }
  const at::Tensor& codebook() const { return embedding_; }
  const at::Tensor& clusterSize() const { return cluster_size_; }
  const at::Tensor& embedSum() const { return embed_sum_; }

 private:
  at::Tensor flatten(const at::Tensor& z_e);  // [N, lookup dim], fp32, projected/normed
  at::Tensor nearest(const at::Tensor& flat) const;
  void restartDeadCodes(StatsReducer& reducer, std::int64_t step);
  void refreshCodebook();

  VectorQuantizerOptions options_;
  std::int64_t dim_;  // lookup dimension
  torch::nn::Linear project_in_{nullptr};
  torch::nn::Linear project_out_{nullptr};
  at::Tensor embedding_;     // [K, dim]
  at::Tensor cluster_size_;  // [K]  EMA of counts
  at::Tensor embed_sum_;     // [K, dim] EMA of sums
  at::Tensor usage_;         // [K] short-horizon EMA of global counts, for dead-code detection
  at::Tensor initialized_;   // [1] 0/1
  mutable bool initialized_host_ = false;  // its value at version initialized_version_
  mutable std::int64_t initialized_version_ = -1;
  at::Tensor window_counts_;       // [K] global counts in the current usage window
  at::Tensor last_window_counts_;  // [K] those of the last complete window
  at::Tensor window_steps_;        // [1]
  at::Tensor restarts_;            // [1] total restarted codes
  at::Tensor pending_counts_;
  at::Tensor pending_sums_;
  std::vector<at::Tensor> pending_inputs_;
};
TORCH_MODULE(VectorQuantizer);

}  // namespace tessera::models
