#include "comm/peer_probe.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

namespace tessera::comm {
namespace {

using std::chrono::milliseconds;

TEST(PeerProbe, NamesUnreachableRanks) {
  EXPECT_EQ(describeUnreachable({}), "");
  EXPECT_EQ(describeUnreachable({2}), "rank 2 unreachable");
  EXPECT_EQ(describeUnreachable({2, 3}), "ranks 2, 3 unreachable");
  EXPECT_EQ(probeToken({"a", "b"}), probeToken({"a", "b"}));
  EXPECT_NE(probeToken({"a", "b"}), probeToken({"ab", ""}));
}

TEST(PeerProbe, ListeningPeersAnswerAndStoppedOnesDoNot) {
  auto a = std::make_unique<PeerProbe>(0);
  auto b = std::make_unique<PeerProbe>(1);
  auto c = std::make_unique<PeerProbe>(2);
  EXPECT_NE(a->address().find(':'), std::string::npos) << a->address();
  const std::vector<std::string> all = {a->address(), b->address(), c->address()};
  for (auto* p : {a.get(), b.get(), c.get()}) p->setPeers(all, probeToken(all));
  EXPECT_EQ(a->unreachable(milliseconds(2000)), std::vector<int>{});
  EXPECT_EQ(c->unreachable(milliseconds(2000)), std::vector<int>{});
  b.reset();  // its port is closed now: refused at once
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(a->unreachable(milliseconds(2000)), std::vector<int>{1});
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(1900));
}

TEST(PeerProbe, ASilentListenerOrAnotherJobIsUnreachable) {
  // A socket that accepts (the kernel completes the handshake) but never greets, as a stopped
  // process does.
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(any);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&any), sizeof(any)), 0);
  ASSERT_EQ(::listen(silent, 4), 0);
  ASSERT_EQ(::getsockname(silent, reinterpret_cast<sockaddr*>(&any), &len), 0);
  PeerProbe a(0);
  PeerProbe other(1);
  const std::string silent_at = "127.0.0.1:" + std::to_string(ntohs(any.sin_port));
  a.setPeers({a.address(), silent_at, other.address(), "", "nonsense"}, 42);
  other.setPeers({a.address(), other.address()}, 43);  // another job's token
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(a.unreachable(milliseconds(300)), (std::vector<int>{1, 2, 3, 4}));
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, milliseconds(3000));
  ::close(silent);
}

TEST(PeerProbe, OffSwitch) {
  const char* before = std::getenv("TESSERA_PEER_PROBE");
  const std::string saved = before != nullptr ? before : "";
  ::setenv("TESSERA_PEER_PROBE", "0", 1);
  EXPECT_FALSE(PeerProbe::enabled());
  ::setenv("TESSERA_PEER_PROBE", "1", 1);
  EXPECT_TRUE(PeerProbe::enabled());
  if (before != nullptr) {
    ::setenv("TESSERA_PEER_PROBE", saved.c_str(), 1);
  } else {
    ::unsetenv("TESSERA_PEER_PROBE");
  }
}

}  // namespace
}  // namespace tessera::comm
