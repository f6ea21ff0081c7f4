// Measurements behind `tessera bench allreduce` (the trainer prints them as JSON lines).
// Both functions are collective: every rank calls them with the same arguments. Warm-up
// iterations are not timed; times are medians over the timed ones.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "comm/communicator.h"
#include "comm/grad_reducer.h"
#include "core/json.h"

namespace torch::nn {
class Module;
}

namespace tessera::comm {

struct BenchIterations {
  int warmup = 3;
  int iterations = 20;
};

// Effective bandwidth of the GradReducer on gradients shaped like `like` (e.g. a model's
// parameters; their values are not touched) against, in the same run and interleaved
// iteration by iteration: one raw MPI_Allreduce of a flat buffer of the same total bytes (CPU
// communicators under MPI), and one Communicator::allReduce of that flat buffer. Keys: bytes,
// buckets, reducer_s, raw_mpi_s, flat_s, reducer_gbps, raw_mpi_gbps, flat_gbps,
// ratio_vs_raw_mpi (raw time / reducer time; >= 0.9 is the target), ratio_vs_flat, and the
// best-iteration reducer_best_s, raw_mpi_best_s, ratio_best_vs_raw_mpi (on a noisy machine the
// medians move with the neighbours' load). Times: median over iterations of the slowest rank.
JsonObject benchReducerBandwidth(Communicator& comm, const std::vector<at::Tensor>& like,
                                 const GradReducerOptions& reducer, const BenchIterations& iters);

// How much of the gradient communication the reducer hides behind backward on a real model.
// `loss` runs a forward pass and returns the scalar loss (each call may draw a new batch). Per
// iteration, interleaved: backward alone; backward then a synchronous reduction of the same
// buckets (overlap off); backward with the overlapped reducer. finish() times are taken on the
// rank that finished backward last (the others also wait for it, which is skew, not
// communication). Keys: backward_s, sync_comm_s (finish() without overlap), backward_then_sync_s,
// overlapped_s, exposed_s (finish() with overlap), overlapped_comm_s (launch->completion),
// backward_skew_s, hidden_fraction (1 - exposed_s / sync_comm_s), speedup
// (backward_then_sync_s / overlapped_s), buckets, bytes. Times are medians over iterations.
JsonObject benchReducerOverlap(Communicator& comm, torch::nn::Module& model,
                               const std::function<at::Tensor()>& loss,
                               const GradReducerOptions& reducer, const BenchIterations& iters);

}  // namespace tessera::comm
