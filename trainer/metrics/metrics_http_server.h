// A minimal HTTP/1.x endpoint for Prometheus scrapes: GET /metrics answers with `body()`, any
// other path with 404; one connection at a time, closed after each answer.
//
// Tessera serves metrics itself rather than through prometheus-cpp's civetweb Exposer: civetweb
// starts its threads with a fixed, small stack, and glibc places a process's static TLS on every
// thread's stack; with LibTorch and OpenBLAS loaded, the TLS no longer fits and civetweb cannot
// start a single thread (pthread_create fails with EINVAL; "Cannot create threads").
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace tessera::trainer {

class MetricsHttpServer {
 public:
  // Binds `address` (an IPv4 or IPv6 literal or a host name) at `port` and starts serving on a
  // background thread. Throws std::runtime_error naming the address and the reason when the
  // port cannot be bound. `body` is called on the server thread for each scrape.
  MetricsHttpServer(const std::string& address, int port, std::function<std::string()> body);
  // Stops the thread (at most one in-flight answer is finished) and closes the socket.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

 private:
  void serve();
  void answer(int fd);

  std::function<std::string()> body_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace tessera::trainer
