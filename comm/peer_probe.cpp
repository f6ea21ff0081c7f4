#include "comm/peer_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include "core/error.h"

namespace tessera::comm {
namespace {

// "TSRP", the token (8 bytes), the rank (4 bytes), in host byte order (every rank of a job runs
// the same build; a mismatch only makes a peer count as unreachable).
constexpr std::size_t kGreetingBytes = 16;

void greeting(char* out, std::uint64_t token, int rank) {
  std::memcpy(out, "TSRP", 4);
  std::memcpy(out + 4, &token, 8);
  const std::int32_t r = rank;
  std::memcpy(out + 12, &r, 4);
}

std::vector<std::string> localAddresses() {
  std::vector<std::string> outer;
  std::vector<std::string> loopback;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) == 0) {
    for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
      if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
      if ((i->ifa_flags & IFF_UP) == 0) continue;
      char text[INET_ADDRSTRLEN] = {0};
      const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) == nullptr) continue;
      ((i->ifa_flags & IFF_LOOPBACK) != 0 ? loopback : outer).emplace_back(text);
    }
    freeifaddrs(list);
  }
  outer.insert(outer.end(), loopback.begin(), loopback.end());
  if (outer.empty()) outer.emplace_back("127.0.0.1");
  return outer;
}

// "a,b:port" -> ({a, b}, port); port 0 when malformed.
std::pair<std::vector<std::string>, int> parseAddress(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return {{}, 0};
  std::vector<std::string> hosts;
  std::string rest = text.substr(0, colon);
  for (std::size_t start = 0; start <= rest.size();) {
    const auto comma = rest.find(',', start);
    const std::string host =
        rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!host.empty()) hosts.push_back(host);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return {hosts, std::atoi(text.c_str() + colon + 1)};
}

}  // namespace

struct PeerProbe::Listener {
  int fd = -1;
  int rank = 0;
  std::atomic<std::uint64_t> token{0};
  std::atomic<bool> stop{false};
  std::thread thread;

  void serve() {
    while (!stop.load()) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const int conn = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (conn < 0) continue;
      const std::uint64_t t = token.load();
      if (t != 0) {
        char msg[kGreetingBytes];
        greeting(msg, t, rank);
        (void)!::send(conn, msg, sizeof(msg), MSG_NOSIGNAL);
      }
      ::close(conn);
    }
  }
};

bool PeerProbe::enabled() {
  const char* v = std::getenv("TESSERA_PEER_PROBE");
  if (v == nullptr) return true;
  const std::string s(v);
  return !(s == "0" || s == "off" || s == "false");
}

PeerProbe::PeerProbe(int rank) : rank_(rank), listener_(std::make_unique<Listener>()) {
  Listener& l = *listener_;
  l.rank = rank;
  l.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l.fd < 0) throw Error(std::string("peer probe: socket: ") + std::strerror(errno));
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  any.sin_port = 0;
  socklen_t len = sizeof(any);
  if (::bind(l.fd, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0 ||
      ::listen(l.fd, 64) != 0 ||
      ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&any), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(l.fd);
    throw Error("peer probe: cannot listen on a TCP port: " + why);
  }
  std::string hosts;
  for (const auto& a : localAddresses()) hosts += (hosts.empty() ? "" : ",") + a;
  address_ = hosts + ":" + std::to_string(ntohs(any.sin_port));
  l.thread = std::thread([&l] { l.serve(); });
}

PeerProbe::~PeerProbe() {
  listener_->stop.store(true);
  if (listener_->thread.joinable()) listener_->thread.join();
  ::close(listener_->fd);
}

void PeerProbe::setPeers(std::vector<std::string> addresses, std::uint64_t token) {
  peers_ = std::move(addresses);
  token_ = token == 0 ? 1 : token;
  listener_->token.store(token_);
}

std::vector<int> PeerProbe::unreachable(std::chrono::milliseconds timeout) const {
  struct Attempt {
    int rank;
    int fd;
    std::string got;
  };
  std::vector<Attempt> attempts;
  std::set<int> answered;
  for (int r = 0; r < static_cast<int>(peers_.size()); ++r) {
    if (r == rank_) continue;
    const auto [hosts, port] = parseAddress(peers_[static_cast<std::size_t>(r)]);
    if (port <= 0) continue;
    for (const auto& host : hosts) {
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(static_cast<std::uint16_t>(port));
      if (inet_pton(AF_INET, host.c_str(), &to.sin_addr) != 1) continue;
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) continue;
      if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0 &&
          errno != EINPROGRESS) {
        ::close(fd);  // no route, refused at once
        continue;
      }
      attempts.push_back({r, fd, {}});
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < attempts.size(); ++i) {
      if (attempts[i].fd < 0) continue;
      if (answered.count(attempts[i].rank) != 0) {
        ::close(attempts[i].fd);
        attempts[i].fd = -1;
        continue;
      }
      fds.push_back({attempts[i].fd, POLLIN, 0});
      which.push_back(i);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (fds.empty() || left.count() <= 0) break;
    if (::poll(fds.data(), fds.size(), static_cast<int>(left.count())) < 0 && errno != EINTR) {
      break;
    }
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Attempt& a = attempts[which[k]];
      char buf[kGreetingBytes];
      const ssize_t n = ::recv(a.fd, buf, kGreetingBytes - a.got.size(), 0);
      if (n > 0) {
        a.got.append(buf, static_cast<std::size_t>(n));
        if (a.got.size() < kGreetingBytes) continue;
        char want[kGreetingBytes];
        greeting(want, token_, a.rank);
        if (std::memcmp(want, a.got.data(), kGreetingBytes) == 0) answered.insert(a.rank);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      ::close(a.fd);  // refused, closed without the greeting, or a stranger's greeting
      a.fd = -1;
    }
  }
  for (auto& a : attempts) {
    if (a.fd >= 0) ::close(a.fd);
  }
  std::vector<int> out;
  for (int r = 0; r < static_cast<int>(peers_.size()); ++r) {
    if (r != rank_ && answered.count(r) == 0) out.push_back(r);
  }
  return out;
}

std::string describeUnreachable(const std::vector<int>& ranks) {
  if (ranks.empty()) return {};
  std::string list;
  for (int r : ranks) list += (list.empty() ? "" : ", ") + std::to_string(r);
  return (ranks.size() == 1 ? "rank " : "ranks ") + list + " unreachable";
}

std::uint64_t probeToken(const std::vector<std::string>& parts) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const auto& p : parts) {
    for (unsigned char c : p) {
      h ^= c;
      h *= 1099511628211ULL;
    }
    h ^= 0xff;
    h *= 1099511628211ULL;
  }
  return h == 0 ? 1 : h;
}

}  // namespace tessera::comm
