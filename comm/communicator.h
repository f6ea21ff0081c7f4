// The collective-communication seam: one interface, backends chosen once in a factory.
//
// A Communicator connects the same set of processes (every rank of the job) and runs collectives
// on tensors of one device. Contract for every collective: every rank calls it, in the same order
// as every other collective on the same communicator, with tensors of the same dtypes and
// numels (allGather: the same dtype and trailing shape). Collectives run in place. Every wait
// has a deadline (CommOptions::timeout); a collective that misses it throws CommError naming the
// operation, what it carried, the step, the bucket, the bytes and, where known, the peers that
// held it up (see watchdog.h). After such an error the communicator must not be used again: the
// job is broken and the caller exits (trainer/cli.cpp aborts the MPI job with exit code 3).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::comm {

class MpiSession;

enum class ReduceOp {
  kSum,
  kAverage,  // sum / size; on integer dtypes the quotient is truncated towards zero
  kMax,
  kMin,
};

// What an operation is, for deadline reports: op "allreduce", what "grads[vqvae]", step, bucket.
// step and bucket are -1 where they do not apply.
struct OpLabel {
  std::string op;
  std::string what;
  std::int64_t step = -1;
  int bucket = -1;
};

// A collective in flight. Owns what the operation reads and writes until it completes.
// test() and wait() are called from the thread that launched the operation (MPI is initialised
// with MPI_THREAD_FUNNELED). Destroying an incomplete Work does not cancel it: the backend keeps
// its buffers alive, because a peer may still write into them.
class Work {
 public:
  virtual ~Work();
  // Progresses the operation (MPI's non-blocking collectives advance only when tested); true once
  // it has completed, including any post-processing (averaging, copies back).
  virtual bool test() = 0;
  // Completes the operation, or throws CommError once its deadline has passed.
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Tensors handed to collectives live on this device.
  virtual c10::Device device() const = 0;
  // A short name for logs: "mpi", "nccl", "local".
  virtual std::string backendName() const = 0;
  // True when operations may be launched and tested from any thread (e.g. from autograd hooks on
  // a device thread); false when only the thread that created the communicator may (MPI).
  virtual bool launchesFromAnyThread() const { return false; }

  // Tensors: contiguous, on device(), same dtypes/numels on every rank, in-place.
  virtual std::shared_ptr<Work> allReduceAsync(std::vector<at::Tensor> tensors, ReduceOp op,
                                               OpLabel label) = 0;
  // In place: root's values on every rank.
  virtual std::shared_ptr<Work> broadcastAsync(std::vector<at::Tensor> tensors, int root,
                                               OpLabel label) = 0;
  // Every rank's tensor concatenated along dim 0 in rank order; dim-0 sizes may differ, the
  // dtype and the other dimensions may not (a mismatch is a CommError). A 0-dim tensor counts as
  // one row. The result is a new tensor on device().
  virtual at::Tensor allGather(const at::Tensor& tensor, OpLabel label) = 0;
  virtual void barrier(OpLabel label) = 0;

  void allReduce(std::vector<at::Tensor> tensors, ReduceOp op, OpLabel label);
  void broadcast(std::vector<at::Tensor> tensors, int root, OpLabel label);
};

enum class CommBackend {
  kAuto,  // world of one: local; CPU: MPI; CUDA: NCCL when built and usable, else MPI
  kMpi,   // MPI even at world size 1 (when MPI is initialised); CUDA tensors staged via host
  kNccl,  // NCCL even at world size 1; NotAvailable in a build without NCCL
};

struct CommOptions {
  // Deadline of every collective, counted from its launch.
  std::chrono::milliseconds timeout{600000};
  CommBackend backend = CommBackend::kAuto;
};

// The communicator for training traffic on `device`. Collective: every rank calls it, in the same
// order relative to other communicator constructions. CPU device -> MPI; CUDA device -> NCCL when
// built and usable (falls back to MPI with host staging, logged once, e.g. when several ranks
// share one GPU). World size 1: no MPI calls at all.
std::unique_ptr<Communicator> makeCommunicator(const MpiSession& mpi, c10::Device device,
                                               const CommOptions& options);

// The MPI control plane on CPU tensors, for small agreements (stop flags, hashes, counts) on any
// device. Collective like makeCommunicator.
std::unique_ptr<Communicator> makeControlCommunicator(const MpiSession& mpi,
                                                      const CommOptions& options);

const char* toString(ReduceOp op);

}  // namespace tessera::comm
