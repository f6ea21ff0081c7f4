// Data-parallel gradient averaging that overlaps the backward pass (after PyTorch DDP's reducer
// and Horovod's tensor fusion).
//
// Gradients live in a few flat buckets: each parameter's .grad() is a view into its bucket, so
// autograd accumulates straight into the buffer that is all-reduced and nothing is copied back.
// Buckets are filled in reverse registration order (roughly the order in which backward produces
// gradients), the first one small so that communication starts early. During a synchronising
// backward an autograd hook marks each parameter ready as its gradient is accumulated; a bucket
// whose parameters are all ready is launched as a non-blocking all-reduce, in bucket order
// (identical on every rank), and the hooks keep testing launched buckets so that MPI progresses
// while backward computes. finish() launches what is left (a parameter that got no gradient
// contributes what its view holds: zeros, or its earlier micro-batches' sum), waits under the
// communicator's deadline and leaves the average over ranks in every param.grad().
//
// Collective order: a bucket whose parameters all got gradients is launched during backward;
// one with a parameter that got none is launched by finish(), and which case applies may differ
// between ranks. So between the end of a synchronising backward and finish(), issue no other
// collective on the reducer's communicator (agreements go through the control communicator;
// collectives in the forward pass, before backward, are fine).
//
// At world size 1 nothing is communicated (nor compressed). Parameters must keep their device
// and dtype for the reducer's lifetime (the hooks live on their gradient accumulators).
//
// Several reducers on one communicator (one per optimizer: VQGAN has two) follow two rules,
// both enforced (Error):
//  - one synchronising backward at a time per communicator: a reducer's prepare(true) ...
//    finish() must not overlap another's on the same communicator (checkIdle() tells other
//    collectives on it the same);
//  - a reducer's parameters get gradients only between its own prepare() and finish(): a
//    backward that reaches them at another time (a generator's loss run through the
//    discriminator) throws from that backward instead of adding into the buckets that the
//    discriminator's next update would reduce. Freeze the other model's parameters
//    (requires_grad false) while such a loss is built and backpropagated.
//
// Use:
//   reducer.zeroGrad();
//   for (micro-batch m of M) { reducer.prepare(m == M - 1, step); loss.backward(); }
//   reducer.finish();
//   optimizer.step();
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace tessera::comm {

// What a bucket travels as. kBf16/kFp16 compress float32/float64 buckets to 16 bits on the wire
// (each rank's gradient is divided by the world size first, so fp16 does not overflow, then
// summed in 16 bits and widened again).
enum class WireDtype { kNative, kBf16, kFp16 };

struct GradReducerOptions {
  std::size_t bucket_cap_bytes = 25u << 20;
  std::size_t first_bucket_cap_bytes = 1u << 20;
  WireDtype wire = WireDtype::kNative;
  std::string name = "grads";  // used in OpLabel.what
  // false: buckets are launched only by finish() (no overlap; for benchmarks and debugging).
  bool overlap = true;
  // true: the caller multiplies every loss by lossScale() (1 / world size) before backward, so
  // the reducer only sums and skips its own pass over the gradients (about 25% of a 2.6 MB
  // MPI all-reduce on a CPU). The gradients after finish() are the same average either way.
  bool caller_scales_loss = false;
};

struct ReducerStats {  // of the last synchronised step
  int buckets = 0;
  std::int64_t bytes = 0;      // wire bytes per rank
  double comm_seconds = 0;     // sum over buckets of launch->completion time
  double exposed_seconds = 0;  // time finish() spent waiting after backward returned
};

class GradReducer {
 public:
  // params in registration order (module.parameters()); those that do not require grad are
  // ignored. They must be leaves on comm.device() with floating dtypes. Existing gradients are
  // kept (copied into the buckets). `comm` must outlive the reducer.
  GradReducer(Communicator& comm, std::vector<at::Tensor> params, GradReducerOptions options);
  // Removes the autograd hooks; gradients stay valid (views into the buckets).
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Before each micro-batch's backward. sync=false: gradients only accumulate locally (into the
  // bucket views); sync=true (last micro-batch): buckets are all-reduced as their last gradient
  // is produced during backward. step is for labels. Gradients that were detached from the
  // buckets (e.g. by optimizer.zero_grad(), which sets them to None in LibTorch 2.x) are
  // re-attached, keeping their values.
  void prepare(bool sync, std::int64_t step);
  // After backward: launches buckets still pending, waits for all (CommError on the deadline),
  // and leaves the average over ranks in param.grad(). After a sync=false prepare it does nothing.
  void finish();
  // Zeroes all gradients (use instead of optimizer.zero_grad()).
  void zeroGrad();
  const ReducerStats& stats() const;
  // What the caller multiplies each loss by when options.caller_scales_loss, else 1.
  double lossScale() const;

  void setOverlap(bool overlap);

  // Throws Error naming `what` when some reducer's synchronising backward is in progress on
  // `comm` (another collective issued now could interleave with its bucket all-reduces).
  static void checkIdle(const Communicator& comm, const std::string& what);
  // Indices into the constructor's parameter list, per bucket in launch order.
  std::vector<std::vector<std::size_t>> bucketLayout() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

const char* toString(WireDtype wire);

}  // namespace tessera::comm
