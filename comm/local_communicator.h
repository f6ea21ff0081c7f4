// A world of one: every collective is complete the moment it is launched, and no MPI is touched
// (a process started without a launcher has no MPI at all).
#pragma once

#include "comm/communicator.h"

namespace tessera::comm {

class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(c10::Device device) : device_(device) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  c10::Device device() const override { return device_; }
  std::string backendName() const override { return "local"; }
  bool launchesFromAnyThread() const override { return true; }

  std::shared_ptr<Work> allReduceAsync(std::vector<at::Tensor> tensors, ReduceOp op,
                                       OpLabel label) override;
  std::shared_ptr<Work> broadcastAsync(std::vector<at::Tensor> tensors, int root,
                                       OpLabel label) override;
  // A copy of `tensor` (a 0-dim tensor becomes one row), like the result on a larger world.
  at::Tensor allGather(const at::Tensor& tensor, OpLabel label) override;
  void barrier(OpLabel label) override {}

 private:
  c10::Device device_;
};

}  // namespace tessera::comm
