// runAgreed under mpirun: a failure on one rank ends every rank with that rank's exit code and
// message (no rank waits for a collective the failing rank never enters), at any world size.
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "tests/mpi_test_support.h"
#include "trainer/agreement.h"

namespace tessera::trainer {
namespace {

std::unique_ptr<comm::Communicator> makeControl() {
  comm::CommOptions o;
  o.timeout = std::chrono::seconds(20);
  return comm::makeControlCommunicator(testing::mpiSession(), o);
}

TEST(RunAgreed, NoFailureRunsTheWorkOnEveryRank) {
  auto control = makeControl();
  int ran = 0;
  EXPECT_NO_THROW(runAgreed(*control, "setup", [&] { ++ran; }));
  EXPECT_EQ(ran, 1);
}

TEST(RunAgreed, OneRanksInputErrorEndsEveryRankWithExitCode2) {
  auto control = makeControl();
  const int failing = control->size() - 1;
  const auto started = std::chrono::steady_clock::now();
  try {
    runAgreed(*control, "setup", [&] {
      if (control->rank() == failing) throw InputError("data.test: cannot open 'missing.h5'");
    });
    FAIL() << "no exception on rank " << control->rank();
  } catch (const Error& e) {
    EXPECT_EQ(e.exitCode(), kExitUsage);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cannot open 'missing.h5'"), std::string::npos) << msg;
    if (control->rank() != failing) {
      EXPECT_NE(msg.find("rank " + std::to_string(failing) + " failed during setup"),
                std::string::npos)
          << msg;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LT(seconds, 10.0);
}

TEST(RunAgreed, TheLowestFailingRankSpeaksAndKeepsItsExitCode) {
  auto control = makeControl();
  // Every rank but 0 fails; rank 1 (or rank 0 alone) with a runtime error, the others with a
  // communication error. The job ends with the lowest failing rank's code and message.
  const int expected_root = control->size() == 1 ? 0 : 1;
  try {
    runAgreed(*control, "resume", [&] {
      if (control->size() > 1 && control->rank() == 0) return;
      if (control->rank() == expected_root) throw Error("read error in ckpt-5.h5");
      throw CommError("lost peer");
    });
    FAIL() << "no exception on rank " << control->rank();
  } catch (const Error& e) {
    EXPECT_EQ(e.exitCode(), kExitFailure) << e.what();
    EXPECT_NE(std::string(e.what()).find("read error in ckpt-5.h5"), std::string::npos) << e.what();
  }
}

TEST(RunAgreed, ForeignExceptionsBecomeExitCode1) {
  auto control = makeControl();
  try {
    runAgreed(*control, "setup", [&] {
      if (control->rank() == 0) throw std::runtime_error("filesystem error: boom");
    });
    FAIL() << "no exception on rank " << control->rank();
  } catch (const std::exception& e) {
    EXPECT_EQ(exitCodeFor(e), kExitFailure);
    EXPECT_NE(std::string(e.what()).find("boom"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera::trainer
