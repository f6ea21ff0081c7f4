#include "tests/metrics/loopback_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace tessera::testing {
namespace {

class Fd {
 public:
  Fd() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    if (fd_ < 0) throw std::runtime_error("socket() failed");
  }
  ~Fd() { ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

bool bindable(int fd, int port) {
  const sockaddr_in a = loopback(port);
  return ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
}

}  // namespace

int freeLoopbackPorts(int count) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    Fd first;
    if (!bindable(first.get(), 0)) continue;
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(first.get(), reinterpret_cast<sockaddr*>(&a), &len);
    const int base = ntohs(a.sin_port);
    if (base + count > 65536) continue;
    bool ok = true;
    for (int i = 1; i < count && ok; ++i) {
      Fd next;
      ok = bindable(next.get(), base + i);
    }
    if (ok) return base;
  }
  throw std::runtime_error("no range of free loopback ports found");
}

ListeningSocket::ListeningSocket(int port) {
  Fd fd;
  if (!bindable(fd.get(), port) || ::listen(fd.get(), 4) != 0) {
    throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(port));
  }
  fd_ = fd.release();
}

ListeningSocket::~ListeningSocket() {
  if (fd_ >= 0) ::close(fd_);
}

std::optional<std::string> httpGet(int port, const std::string& path) {
  Fd fd;
  timeval timeout{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  const sockaddr_in a = loopback(port);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    return std::nullopt;
  }
  const std::string request =
      "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return std::nullopt;
  }
  std::string response;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  const auto header_end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || header_end == std::string::npos ||
      response.find(" 200 ") > response.find("\r\n")) {
    return std::nullopt;
  }
  return response.substr(header_end + 4);
}

std::vector<Sample> Exposition::find(const std::string& name,
                                     const std::map<std::string, std::string>& labels) const {
  std::vector<Sample> out;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      const auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (match) out.push_back(s);
  }
  return out;
}

Exposition parseExposition(const std::string& text) {
  Exposition e;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      e.types[name] = type;
      continue;
    }
    if (line[0] == '#') continue;
    Sample s;
    size_t pos = line.find_first_of("{ ");
    if (pos == std::string::npos) throw std::runtime_error("bad sample line: " + line);
    s.name = line.substr(0, pos);
    if (line[pos] == '{') {
      ++pos;
      while (line[pos] != '}') {
        const size_t eq = line.find("=\"", pos);
        if (eq == std::string::npos) throw std::runtime_error("bad labels: " + line);
        const std::string key = line.substr(pos, eq - pos);
        std::string value;
        size_t i = eq + 2;
        for (; i < line.size() && line[i] != '"'; ++i) {
          if (line[i] == '\\' && i + 1 < line.size()) ++i;
          value += line[i];
        }
        if (i >= line.size()) throw std::runtime_error("unterminated label: " + line);
        s.labels[key] = value;
        pos = i + 1;
        if (line[pos] == ',') ++pos;
      }
      ++pos;
    }
    const std::string value = line.substr(line.find_first_not_of(' ', pos));
    s.value = std::strtod(value.c_str(), nullptr);
    e.samples.push_back(std::move(s));
  }
  return e;
}

}  // namespace tessera::testing
