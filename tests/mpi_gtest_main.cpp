// main() for GoogleTest suites that run as every rank of an mpirun job. The MPI session lives
// for the whole run; tests reach it through tessera::testing::mpiSession(). Only rank 0 prints
// the per-test progress; every rank prints its failures, prefixed with its rank.
#include <gtest/gtest.h>

#include <memory>

#include "comm/mpi_session.h"
#include "tests/mpi_test_support.h"

namespace tessera::testing {
namespace {
comm::MpiSession* g_session = nullptr;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_,
                   r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
    }
  }

 private:
  int rank_;
};
}  // namespace

comm::MpiSession& mpiSession() {
  return *g_session;
}
}  // namespace tessera::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  tessera::comm::MpiSession session;
  tessera::testing::g_session = &session;
  const int rank = session.world().rank;
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new tessera::testing::RankFailurePrinter(rank));
  }
  return RUN_ALL_TESTS();
}
