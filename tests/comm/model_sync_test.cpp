// Start-of-training agreement: identical parameter lists pass, a difference fails fast on every
// rank with a message naming the parameter, and broadcastFromRoot copies root's values.
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <chrono>

#include "comm/communicator.h"
#include "comm/model_sync.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "tests/mpi_test_support.h"

namespace tessera::comm {
namespace {

std::unique_ptr<Communicator> makeComm() {
  CommOptions o;
  o.timeout = std::chrono::seconds(20);
  return makeCommunicator(testing::mpiSession(), c10::Device(c10::kCPU), o);
}

NamedTensors params(std::int64_t fc_in) {
  return {{"conv.weight", at::zeros({8, 1, 3, 3})},
          {"conv.bias", at::zeros({8})},
          {"fc.weight", at::zeros({10, fc_in})},
          {"fc.bias", at::zeros({10}, at::kDouble)}};
}

std::string verifyError(Communicator& comm, const NamedTensors& mine) {
  try {
    verifySameParameters(comm, mine, "vqvae");
  } catch (const CommError& e) {
    return e.what();
  }
  return {};
}

TEST(ModelSync, IdenticalParametersPass) {
  auto comm = makeComm();
  EXPECT_NO_THROW(verifySameParameters(*comm, params(32), "vqvae"));
}

TEST(ModelSync, ShapeMismatchNamesTheParameterQuickly) {
  auto comm = makeComm();
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  const auto started = std::chrono::steady_clock::now();
  const std::string msg = verifyError(*comm, params(comm->rank() == 1 ? 5 : 32));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LT(seconds, 30.0);
  EXPECT_NE(msg.find("vqvae: parameters differ between ranks at #2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0 has 'fc.weight' Float [10, 32]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1 has 'fc.weight' Float [10, 5]"), std::string::npos) << msg;
}

TEST(ModelSync, CountAndDtypeMismatchesAreReported) {
  auto comm = makeComm();
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  NamedTensors mine = params(32);
  if (comm->rank() == comm->size() - 1) mine.push_back({"extra.weight", at::zeros({3})});
  std::string msg = verifyError(*comm, mine);
  EXPECT_NE(msg.find("(counts from 4 to 5) at #4:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0 has no parameter #4 (only 4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has 'extra.weight' Float [3]"), std::string::npos) << msg;

  mine = params(32);
  if (comm->rank() == 0) mine[3].second = at::zeros({10}, at::kFloat);
  msg = verifyError(*comm, mine);
  EXPECT_NE(msg.find("rank 0 has 'fc.bias' Float [10], rank 1 has 'fc.bias' Double [10]"),
            std::string::npos)
      << msg;
}

TEST(ModelSync, BroadcastFromRootCopiesRootValues) {
  auto comm = makeComm();
  const int r = comm->rank();
  for (int root : {0, comm->size() - 1}) {
    std::vector<at::Tensor> tensors = {at::full({8, 1, 3, 3}, r, at::kFloat),
                                       at::full({5}, r, at::kLong), at::full({0}, r, at::kFloat),
                                       at::full({7, 3}, r, at::kFloat).t(),  // not contiguous
                                       at::full({}, r, at::kDouble)};
    tensors[0].set_requires_grad(true);
    broadcastFromRoot(*comm, tensors, root);
    for (const auto& t : tensors) {
      EXPECT_TRUE(at::equal(t, at::full(t.sizes(), root, t.options().requires_grad(false))))
          << "root " << root << ": " << t;
    }
    EXPECT_TRUE(tensors[0].requires_grad());
  }
}

}  // namespace
}  // namespace tessera::comm
