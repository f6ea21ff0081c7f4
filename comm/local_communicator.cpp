#include "comm/local_communicator.h"

#include "comm/detail/tensor_checks.h"
#include "core/error.h"

namespace tessera::comm {
namespace {

class CompletedWork final : public Work {
 public:
  bool test() override { return true; }
  void wait() override {}
};

}  // namespace

std::shared_ptr<Work> LocalCommunicator::allReduceAsync(std::vector<at::Tensor> tensors,
                                                        ReduceOp op, OpLabel label) {
  // The same argument checks as on a larger world, so that mistakes show up in single-process
  // runs; sum, average, max and min over one rank are the identity.
  detail::checkCollectiveTensors(tensors, device_, "allreduce " + label.what);
  return std::make_shared<CompletedWork>();
}

std::shared_ptr<Work> LocalCommunicator::broadcastAsync(std::vector<at::Tensor> tensors, int root,
                                                        OpLabel label) {
  detail::checkCollectiveTensors(tensors, device_, "broadcast " + label.what);
  if (root != 0) {
    throw Error("broadcast " + label.what + ": root " + std::to_string(root) +
                " does not exist in a world of one");
  }
  return std::make_shared<CompletedWork>();
}

at::Tensor LocalCommunicator::allGather(const at::Tensor& tensor, OpLabel label) {
  if (!tensor.defined()) throw Error("allgather " + label.what + ": undefined tensor");
  detail::checkCollectiveTensors({tensor.contiguous()}, device_, "allgather " + label.what);
  return tensor.dim() == 0 ? tensor.reshape({1}).clone() : tensor.clone();
}

}  // namespace tessera::comm
