// Dead-code restarts across ranks (issue 12, defect 6), run under mpirun at 1, 2 and 4 ranks:
// the bytes a restart moves do not grow with the world size, every rank ends with the same
// codebook, and the restarted codes are those one process restarts on the global batch.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "models/vector_quantizer.h"
#include "tests/mpi_test_support.h"

namespace tessera::models {
namespace {

// Counts what each statistic collective carries: the tensor's bytes for sums and broadcasts,
// the gathered result's bytes for all-gathers (what every rank receives). `inner` == nullptr:
// a world of one.
class CountingReducer final : public StatsReducer {
 public:
  explicit CountingReducer(comm::Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_ ? inner_->rank() : 0; }
  int size() const override { return inner_ ? inner_->size() : 1; }
  void sumInPlace(at::Tensor& t) override {
    sum_bytes += t.nbytes();
    if (inner_) inner_->allReduce({t}, comm::ReduceOp::kSum, {"allreduce", "test", -1, -1});
  }
  at::Tensor allGather(const at::Tensor& t) override {
    at::Tensor out = inner_ ? inner_->allGather(t, {"allgather", "test", -1, -1}) : t;
    gather_bytes += out.nbytes();
    return out;
  }
  void broadcast(at::Tensor& t, int root) override {
    broadcast_bytes += t.nbytes();
    if (inner_) inner_->broadcast({t}, root, {"broadcast", "test", -1, -1});
  }
  std::int64_t total() const { return sum_bytes + gather_bytes + broadcast_bytes; }
  void reset() { sum_bytes = gather_bytes = broadcast_bytes = 0; }

  std::int64_t sum_bytes = 0, gather_bytes = 0, broadcast_bytes = 0;

 private:
  comm::Communicator* inner_;
};

constexpr std::int64_t kCodes = 32, kDim = 8, kSide = 4;

VectorQuantizerOptions options(double restart_threshold) {
  VectorQuantizerOptions o;
  o.codebook_size = kCodes;
  o.code_dim = kDim;
  o.init = CodebookInit::kRandom;
  o.restart_threshold = restart_threshold;
  o.restart_every = 1;
  o.seed = 11;
  return o;
}

// A quantizer whose codes 0..3 alone were used recently and are the only ones near the inputs:
// the other 28 are dead whatever the batch.
VectorQuantizer quantizer(double restart_threshold) {
  VectorQuantizer vq(options(restart_threshold));
  torch::NoGradGuard no_grad;
  vq->codebook().slice(0, 4).add_(1000.0f);
  vq->clusterSize().fill_(1.0f);
  vq->embedSum().copy_(vq->codebook());
  at::Tensor usage = vq->named_buffers()["usage"];
  usage.zero_();
  usage.slice(0, 0, 4).fill_(100.0f);
  vq->train();
  return vq;
}

// Images [first, first + count) of a keyed global batch of encoder outputs.
at::Tensor images(std::int64_t first, std::int64_t count) {
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(99);
  const at::Tensor all = at::randn({64, kDim, kSide, kSide}, gen);
  return all.slice(0, first, first + count).contiguous();
}

struct Outcome {
  std::int64_t restart_bytes = 0;
  std::int64_t update_bytes = 0;  // the same update without restarts
  std::int64_t restarted = 0;
  at::Tensor codebook;
};

// One training step's update on `z` (this rank's images) with restarts, minus the bytes the same
// update moves without restarts.
Outcome step(CountingReducer& reducer, const at::Tensor& z) {
  VectorQuantizer with = quantizer(0.5), without = quantizer(0);
  with->forward(z);
  without->forward(z);
  reducer.reset();
  without->update(reducer, 0);
  const std::int64_t base = reducer.total();
  reducer.reset();
  with->update(reducer, 0);
  Outcome out;
  out.restart_bytes = reducer.total() - base;
  out.update_bytes = base;
  out.restarted = with->health().restarts;
  out.codebook = with->codebook().clone();
  return out;
}

class RestartAcrossRanks : public ::testing::Test {
 protected:
  void SetUp() override {
    comm::CommOptions o;
    o.timeout = std::chrono::milliseconds(60000);
    comm_ = comm::makeCommunicator(testing::mpiSession(), c10::Device(c10::kCPU), o);
  }
  // Whether every rank holds this rank's codebook, bit for bit.
  bool replicated(const at::Tensor& codebook) {
    const at::Tensor all =
        comm_->allGather(codebook.reshape({1, -1}).contiguous(), {"allgather", "check", -1, -1});
    return all.eq(all[0]).all().item<bool>();
  }
  std::unique_ptr<comm::Communicator> comm_;
};

// Per-rank batch fixed (2 images: 32 encoder outputs), as in training: the global batch grows
// with the world, the restart's traffic must not.
TEST_F(RestartAcrossRanks, BytesDoNotGrowWithWorldSize) {
  const int rank = comm_->rank(), world = comm_->size();
  const std::int64_t per_rank = 2;
  CountingReducer reducer(comm_.get());
  const Outcome mine = step(reducer, images(rank * per_rank, per_rank));
  ASSERT_EQ(mine.restarted, 28);
  // The candidates (num_dead x D floats) plus one 16-byte agreement on the partition.
  const std::int64_t expected = 16 + mine.restarted * kDim * 4;
  if (rank == 0) {
    std::printf(
        "[world %d] bytes per restart: %lld (an update without restart: %lld); global "
        "batch %lld encoder outputs\n",
        world, static_cast<long long>(mine.restart_bytes),
        static_cast<long long>(mine.update_bytes),
        static_cast<long long>(world * per_rank * kSide * kSide));
  }
  EXPECT_EQ(mine.restart_bytes, expected);
  EXPECT_TRUE(replicated(mine.codebook));

  // One process with the whole global batch restarts the same codes with the same vectors.
  CountingReducer local(nullptr);
  const Outcome one = step(local, images(0, world * per_rank));
  EXPECT_EQ(one.restarted, mine.restarted);
  EXPECT_TRUE(torch::equal(mine.codebook.slice(0, 4), one.codebook.slice(0, 4)));
  EXPECT_TRUE(torch::allclose(mine.codebook, one.codebook, 1e-5, 1e-6));
}

// Ranks with different batch sizes (rank r has r + 1 images): candidates still come from the
// global batch in its order, as one process would choose them.
TEST_F(RestartAcrossRanks, UnevenBatchesMatchOneProcess) {
  const int rank = comm_->rank(), world = comm_->size();
  CountingReducer reducer(comm_.get());
  const std::int64_t first = rank * (rank + 1) / 2;
  const Outcome mine = step(reducer, images(first, rank + 1));
  EXPECT_TRUE(replicated(mine.codebook));
  CountingReducer local(nullptr);
  const Outcome one = step(local, images(0, world * (world + 1) / 2));
  EXPECT_EQ(one.restarted, mine.restarted);
  EXPECT_TRUE(torch::equal(mine.codebook.slice(0, 4), one.codebook.slice(0, 4)));
}

}  // namespace
}  // namespace tessera::models
