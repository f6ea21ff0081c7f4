// Collectives at any world size (run at 1 without MPI and at 1..4 under mpirun). Values are
// chosen so that the expected results hold exactly at every world size and in every dtype: rank
// r fills element i with r + (i % 7).
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include "comm/communicator.h"
#include "comm/gather_strings.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "tessera/config.h"
#include "tests/mpi_test_support.h"

namespace tessera::comm {
namespace {

using std::chrono::milliseconds;

CommOptions testOptions(milliseconds timeout = milliseconds(60000)) {
  CommOptions o;
  o.timeout = timeout;
  return o;
}

class Collectives : public ::testing::TestWithParam<CommBackend> {
 protected:
  void SetUp() override {
    CommOptions o = testOptions();
    o.backend = GetParam();
    // On a larger world Auto already is MPI (CPU) or NCCL (CUDA): test each backend once.
    const bool several = testing::mpiSession().world().size > 1;
    if (several && ((o.backend == CommBackend::kMpi && device().is_cpu()) ||
                    o.backend == CommBackend::kNccl)) {
      GTEST_SKIP() << "the same backend as Auto at this world size";
    }
    if (o.backend == CommBackend::kNccl && !(TESSERA_WITH_NCCL && device().is_cuda())) {
      GTEST_SKIP() << "NCCL needs a CUDA build and TESSERA_TEST_DEVICE=cuda";
    }
    comm_ = makeCommunicator(testing::mpiSession(), device(), o);
  }
  Communicator& comm() { return *comm_; }
  // Where the collectives run: TESSERA_TEST_DEVICE (e.g. "cuda:0" on a GPU machine), else CPU.
  static c10::Device device() {
    const char* d = std::getenv("TESSERA_TEST_DEVICE");
    return d != nullptr && *d != '\0' ? c10::Device(std::string(d)) : c10::Device(c10::kCPU);
  }
  static at::Tensor on(const at::Tensor& t) { return t.to(device()); }

  std::unique_ptr<Communicator> comm_;
};

const std::int64_t kCounts[] = {0, 1, 1001, 1000000};
const c10::ScalarType kDtypes[] = {c10::kFloat, c10::kDouble, c10::kBFloat16, c10::kLong};

// i % 7 + offset for i in [0, n), in `dtype`; the i % 7 part is computed once per n.
at::Tensor pattern(std::int64_t n, double offset, c10::ScalarType dtype) {
  static std::map<std::int64_t, at::Tensor> cache;
  auto it = cache.find(n);
  if (it == cache.end()) {
    it = cache.emplace(n, at::arange(n, at::kLong).remainder(7).to(at::kDouble)).first;
  }
  return it->second.add(offset).to(dtype);
}

TEST_P(Collectives, AllReduceEveryOpDtypeAndCount) {
  const int n = comm().size();
  const double rank_sum = n * (n - 1) / 2.0;
  for (const auto dtype : kDtypes) {
    for (const auto op : {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin}) {
      std::vector<at::Tensor> tensors;
      for (const auto count : kCounts) tensors.push_back(on(pattern(count, comm().rank(), dtype)));
      comm().allReduce(tensors, op, {"allreduce", "test", 1, -1});
      for (size_t k = 0; k < tensors.size(); ++k) {
        const std::int64_t count = kCounts[k];
        const at::Tensor i7 = pattern(count, 0, at::kDouble);
        at::Tensor expected;
        switch (op) {
          case ReduceOp::kSum:
            expected = i7.mul(n).add(rank_sum);
            break;
          case ReduceOp::kMax:
            expected = i7.add(n - 1);
            break;
          case ReduceOp::kMin:
            expected = i7.clone();
            break;
          case ReduceOp::kAverage:
            // Integers: the quotient of the sum is truncated.
            expected = dtype == c10::kLong
                           ? i7.add(static_cast<double>(static_cast<std::int64_t>(rank_sum) / n))
                           : i7.add(rank_sum / n);
            break;
        }
        EXPECT_EQ(tensors[k].scalar_type(), dtype);
        EXPECT_TRUE(at::equal(tensors[k].cpu().to(at::kDouble), expected))
            << c10::toString(dtype) << " " << toString(op) << " count " << count << " size " << n;
      }
    }
  }
}

TEST_P(Collectives, AsyncOperationsCompleteInAnyWaitOrder) {
  at::Tensor a = on(at::full({5}, comm().rank() + 1.0, at::kFloat));
  at::Tensor b = on(at::full({3}, static_cast<double>(comm().rank()), at::kDouble));
  auto wa = comm().allReduceAsync({a}, ReduceOp::kSum, {"allreduce", "a"});
  auto wb = comm().allReduceAsync({b}, ReduceOp::kMax, {"allreduce", "b"});
  wb->wait();
  while (!wa->test()) std::this_thread::yield();
  wa->wait();
  const int n = comm().size();
  EXPECT_TRUE(at::equal(a.cpu(), at::full({5}, n * (n + 1) / 2.0, at::kFloat)));
  EXPECT_TRUE(at::equal(b.cpu(), at::full({3}, n - 1.0, at::kDouble)));
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  for (int root = 0; root < comm().size(); ++root) {
    std::vector<at::Tensor> tensors;
    for (const auto dtype : kDtypes) {
      for (const auto count : kCounts) tensors.push_back(on(pattern(count, comm().rank(), dtype)));
    }
    comm().broadcast(tensors, root, {"broadcast", "test"});
    size_t k = 0;
    for (const auto dtype : kDtypes) {
      for (const auto count : kCounts) {
        EXPECT_TRUE(at::equal(tensors[k++].cpu(), pattern(count, root, dtype)))
            << "root " << root << " " << c10::toString(dtype) << " count " << count;
      }
    }
  }
}

TEST_P(Collectives, AllGatherWithUnequalSizes) {
  // Rank r contributes r rows (rank 0 none) of 3 values 10 * r + row.
  const int r = comm().rank();
  const at::Tensor mine =
      at::arange(r * 3, at::kLong).reshape({r, 3}).div(3, "floor").add(10 * r).to(at::kFloat);
  const at::Tensor all = comm().allGather(on(mine), {"allgather", "rows"}).cpu();
  std::int64_t rows = 0;
  for (int q = 0; q < comm().size(); ++q) rows += q;
  ASSERT_EQ(all.sizes(), (std::vector<std::int64_t>{rows, 3}));
  std::int64_t row = 0;
  for (int q = 0; q < comm().size(); ++q) {
    for (int j = 0; j < q; ++j, ++row) {
      EXPECT_TRUE(at::equal(all[row], at::full({3}, 10.0 * q + j, at::kFloat))) << q << " " << j;
    }
  }
  // Scalars become one row each.
  const at::Tensor scalars =
      comm()
          .allGather(on(at::full({}, static_cast<double>(r), at::kLong)), {"allgather", "scalars"})
          .cpu();
  EXPECT_TRUE(at::equal(scalars, at::arange(comm().size(), at::kLong)));
  // Strings of different lengths, including an empty one.
  const auto strings = gatherStrings(comm(), std::string(static_cast<size_t>(r), 'x'), "names");
  ASSERT_EQ(strings.size(), static_cast<size_t>(comm().size()));
  for (int q = 0; q < comm().size(); ++q) EXPECT_EQ(strings[q], std::string(q, 'x'));
}

TEST_P(Collectives, AllGatherRejectsDifferentTrailingShapes) {
  if (comm().size() == 1) GTEST_SKIP() << "needs two ranks";
  const at::Tensor mine = on(at::zeros({2, comm().rank() == 1 ? 4 : 3}, at::kFloat));
  try {
    comm().allGather(mine, {"allgather", "codebook stats"});
    ADD_FAILURE() << "no error for different trailing shapes";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("allgather codebook stats: ranks disagree"),
              std::string::npos)
        << e.what();
  }
}

TEST_P(Collectives, BarrierAndRejectedArguments) {
  comm().barrier({"barrier", "test"});
  at::Tensor strided = on(at::zeros({4, 4}, at::kFloat)).t();
  EXPECT_THROW(comm().allReduce({strided}, ReduceOp::kSum, {"allreduce", "x"}), Error);
}

// Auto: local at world size 1, MPI (or NCCL on CUDA) above; Mpi: the MPI backend even at world
// size 1 (under mpirun -np 1), staging CUDA tensors through the host; Nccl: NCCL even at world
// size 1 (only with TESSERA_TEST_DEVICE=cuda in a CUDA build).
INSTANTIATE_TEST_SUITE_P(Backends, Collectives,
                         ::testing::Values(CommBackend::kAuto, CommBackend::kMpi,
                                           CommBackend::kNccl),
                         [](const auto& info) {
                           return info.param == CommBackend::kAuto  ? "Auto"
                                  : info.param == CommBackend::kMpi ? "Mpi"
                                                                    : "Nccl";
                         });

TEST(Factory, ChoosesTheBackendFromWorldAndDevice) {
  auto& mpi = testing::mpiSession();
  const c10::Device cpu(c10::kCPU);
  const c10::Device cuda(c10::kCUDA, 0);
  const std::string expected = mpi.world().size > 1 ? "mpi" : "local";
  EXPECT_EQ(makeCommunicator(mpi, cpu, testOptions())->backendName(), expected);
  EXPECT_EQ(makeControlCommunicator(mpi, testOptions())->backendName(), expected);
  // Without a launcher there is no MPI at all, whatever is asked for.
  CommOptions force_mpi = testOptions();
  force_mpi.backend = CommBackend::kMpi;
  EXPECT_EQ(makeCommunicator(mpi, cpu, force_mpi)->backendName(),
            mpi.world().mpi ? "mpi" : "local");
  CommOptions nccl = testOptions();
  nccl.backend = CommBackend::kNccl;
  EXPECT_THROW(makeCommunicator(mpi, cpu, nccl), UsageError);
#if !TESSERA_WITH_NCCL
  EXPECT_THROW(makeCommunicator(mpi, cuda, nccl), NotAvailable);
  // CUDA tensors without NCCL go through MPI with host staging (nothing touches CUDA here).
  const auto staged = makeCommunicator(mpi, cuda, testOptions());
  EXPECT_EQ(staged->backendName(), expected);
  EXPECT_EQ(staged->device(), cuda);
#endif
  CommOptions zero = testOptions(milliseconds(0));
  EXPECT_THROW(makeCommunicator(mpi, cpu, zero), UsageError);
}

TEST(Deadline, MissedCollectiveNamesOperationAndLaggingPeers) {
  auto& mpi = testing::mpiSession();
  if (mpi.world().size == 1) GTEST_SKIP() << "needs two ranks";
  const int rank = mpi.world().rank;
  // Rank 0 waits 300 ms for a barrier the others enter only after it has given up; their own
  // deadline is long, because rank 0 completes their barrier only when it next polls MPI.
  auto control = makeControlCommunicator(mpi, testOptions());
  auto data = makeCommunicator(mpi, c10::Device(c10::kCPU),
                               testOptions(milliseconds(rank == 0 ? 300 : 60000)));
  if (rank == 0) {
    const auto started = std::chrono::steady_clock::now();
    try {
      data->barrier({"barrier", "deadline probe", 7, 2});
      ADD_FAILURE() << "the barrier completed without the other ranks";
    } catch (const CommError& e) {
      const std::string msg = e.what();
      EXPECT_NE(
          msg.find("barrier deadline probe bucket 2 at step 7 did not complete within 300 ms"),
          std::string::npos)
          << msg;
      EXPECT_NE(msg.find("waiting on rank 1 (entered collectives up to #0"), std::string::npos)
          << msg;
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    EXPECT_GE(waited, 0.3);
    EXPECT_LT(waited, 10.0);
    // A communicator that missed a deadline refuses further work.
    EXPECT_THROW(data->barrier({"barrier", "after failure"}), CommError);
    control->barrier({"barrier", "rank 0 timed out"});
  } else {
    control->barrier({"barrier", "rank 0 timed out"});
    data->barrier({"barrier", "deadline probe", 7, 2});
  }
  control->barrier({"barrier", "all done"});
}

}  // namespace
}  // namespace tessera::comm
