#include "comm/communicator.h"

namespace tessera::comm {

Work::~Work() = default;
Communicator::~Communicator() = default;

void Communicator::allReduce(std::vector<at::Tensor> tensors, ReduceOp op, OpLabel label) {
  allReduceAsync(std::move(tensors), op, std::move(label))->wait();
}

void Communicator::broadcast(std::vector<at::Tensor> tensors, int root, OpLabel label) {
  broadcastAsync(std::move(tensors), root, std::move(label))->wait();
}

const char* toString(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAverage:
      return "average";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

}  // namespace tessera::comm
