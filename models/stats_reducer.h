// How a model shares statistics across data-parallel ranks without knowing MPI: the trainer
// hands models an implementation backed by its communicator; tests and single-process tools use
// LocalStatsReducer.
#pragma once

#include <ATen/core/Tensor.h>

namespace tessera::models {

class StatsReducer {
 public:
  virtual ~StatsReducer() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: the elementwise SUM over ranks. Every rank calls it with the same shape and dtype.
  virtual void sumInPlace(at::Tensor& tensor) = 0;
  // Every rank's tensor concatenated along dim 0 in rank order (dim-0 sizes may differ).
  virtual at::Tensor allGather(const at::Tensor& tensor) = 0;
  // In place: `root`'s values on every rank.
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
};

// A world of one: every operation is the identity.
class LocalStatsReducer final : public StatsReducer {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void sumInPlace(at::Tensor&) override {}
  at::Tensor allGather(const at::Tensor& tensor) override { return tensor; }
  void broadcast(at::Tensor&, int) override {}
};

}  // namespace tessera::models
