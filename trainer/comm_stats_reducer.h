// models::StatsReducer backed by a comm::Communicator: how the VQ codebook's statistics reach
// every rank without models/ knowing MPI or NCCL.
#pragma once

#include "comm/communicator.h"
#include "models/stats_reducer.h"

namespace tessera::trainer {

class CommStatsReducer final : public models::StatsReducer {
 public:
  // `what` names the statistics in deadline reports ("codebook[model]").
  CommStatsReducer(comm::Communicator& comm, std::string what)
      : comm_(comm), what_(std::move(what)) {}

  void setStep(std::int64_t step) { step_ = step; }

  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  void sumInPlace(at::Tensor& tensor) override {
    comm_.allReduce({tensor}, comm::ReduceOp::kSum, {"allreduce", what_, step_, -1});
  }
  at::Tensor allGather(const at::Tensor& tensor) override {
    return comm_.allGather(tensor, {"allgather", what_, step_, -1});
  }
  void broadcast(at::Tensor& tensor, int root) override {
    comm_.broadcast({tensor}, root, {"broadcast", what_, step_, -1});
  }

 private:
  comm::Communicator& comm_;
  std::string what_;
  std::int64_t step_ = -1;
};

}  // namespace tessera::trainer
