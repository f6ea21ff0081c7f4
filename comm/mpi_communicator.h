// Collectives over MPI: non-blocking MPI collectives on a private duplicate of MPI_COMM_WORLD,
// completed by polling under the watchdog's deadline.
//
// CPU tensors are reduced in place. CUDA tensors (the fallback when NCCL is not built or not
// usable) are staged through host memory. bf16 and fp16 are summed, maxed and minned with
// user-defined MPI operations (MPI has no 16-bit float types), rounding each partial result to
// 16 bits. Every MPI call happens on the thread that constructed the communicator
// (MPI_THREAD_FUNNELED).
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "comm/world.h"

namespace tessera::comm {

class MpiCommunicator final : public Communicator {
 public:
  // Collective over the world (duplicates MPI_COMM_WORLD and maps a small shared-memory board of
  // the node's ranks, see peer_board.h). Requires world.mpi.
  MpiCommunicator(const World& world, c10::Device device, const CommOptions& options);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  c10::Device device() const override;
  std::string backendName() const override { return "mpi"; }

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

}  // namespace tessera::comm
