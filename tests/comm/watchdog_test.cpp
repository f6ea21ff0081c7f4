#include "comm/watchdog.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace tessera::comm {
namespace {

using std::chrono::milliseconds;

TEST(Watchdog, DescribesTheOperation) {
  EXPECT_EQ(describeTimeout({"allreduce", "grads[vqvae]", 120, 2}, 1600000, milliseconds(10000)),
            "allreduce grads[vqvae] bucket 2 (1.6 MB) at step 120 did not complete within 10 s");
  EXPECT_EQ(describeOp({"barrier", "", -1, -1}, -1), "barrier");
  EXPECT_EQ(formatBytes(512), "512 B");
  EXPECT_EQ(formatBytes(2500), "2.5 kB");
  EXPECT_EQ(formatBytes(3000000000), "3.0 GB");
  EXPECT_EQ(formatDuration(milliseconds(250)), "250 ms");
  EXPECT_EQ(formatDuration(milliseconds(1500)), "1.5 s");
}

TEST(Watchdog, ThrowsOnceTheDeadlinePasses) {
  const Watchdog dog(milliseconds(50));
  int polls = 0;
  const auto started = SteadyClock::now();
  try {
    dog.waitFor([&] { return ++polls < 0; }, started, [] { return std::string("probe"); });
    ADD_FAILURE() << "no timeout";
  } catch (const CommError& e) {
    EXPECT_STREQ(e.what(), "probe");
    EXPECT_EQ(e.exitCode(), kExitComm);
  }
  const auto waited = SteadyClock::now() - started;
  EXPECT_GE(waited, milliseconds(50));
  EXPECT_LT(waited, milliseconds(5000));
  EXPECT_GT(polls, 1);
}

TEST(Watchdog, ReturnsAsSoonAsThePollSucceeds) {
  const Watchdog dog(milliseconds(50));
  int polls = 0;
  dog.waitFor([&] { return ++polls == 3; }, SteadyClock::now(), [] { return std::string("x"); });
  EXPECT_EQ(polls, 3);
  // An operation that is complete by its first poll is never reported, however late.
  dog.waitFor([] { return true; }, SteadyClock::now() - std::chrono::hours(1),
              [] { return std::string("late"); });
  EXPECT_THROW(Watchdog(milliseconds(0)), UsageError);
}

}  // namespace
}  // namespace tessera::comm
