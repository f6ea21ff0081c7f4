// Collectives over NCCL for CUDA tensors (compiled only when TESSERA_WITH_NCCL).
//
// One NCCL communicator per process on the rank's device, created non-blocking (the
// ncclUniqueId travels over the MPI control plane) and polled under the watchdog's deadline.
// Collectives run on the communicator's own CUDA stream, ordered after the caller's current
// stream through an event; Work::test()/wait() poll the completion event and
// ncclCommGetAsyncError, and a missed deadline or an asynchronous error aborts the NCCL
// communicator (ncclCommAbort) before CommError is thrown, so no kernel waits forever.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace tessera::comm {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `control`'s ranks (rank and size are taken from it).
  NcclCommunicator(Communicator& control, c10::Device device, const CommOptions& options);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  c10::Device device() const override;
  std::string backendName() const override { return "nccl"; }
  // NCCL calls are serialised by a mutex and may come from autograd's device threads.
  bool launchesFromAnyThread() const override { return true; }

  std::shared_ptr<Work> allReduceAsync(std::vector<at::Tensor> tensors, ReduceOp op,
                                       OpLabel label) override;
  std::shared_ptr<Work> broadcastAsync(std::vector<at::Tensor> tensors, int root,
                                       OpLabel label) override;
  at::Tensor allGather(const at::Tensor& tensor, OpLabel label) override;
  void barrier(OpLabel label) override;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// The CUDA device's PCI bus id ("0000:3b:00.0"): two ranks with the same host and id share a GPU,
// which NCCL does not support.
std::string ncclDeviceIdentity(c10::Device device);

}  // namespace tessera::comm
