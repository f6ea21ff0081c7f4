// Test helpers for the metrics endpoint: free loopback ports, a minimal HTTP GET, and a parser
// for the Prometheus text exposition format.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tessera::testing {

// A port p on 127.0.0.1 such that p .. p+count-1 could all be bound a moment ago.
int freeLoopbackPorts(int count);

// A socket listening on 127.0.0.1:port for the lifetime of the object (to occupy a port).
class ListeningSocket {
 public:
  explicit ListeningSocket(int port);  // throws std::runtime_error when the port is taken
  ~ListeningSocket();
  ListeningSocket(const ListeningSocket&) = delete;
  ListeningSocket& operator=(const ListeningSocket&) = delete;

 private:
  int fd_ = -1;
};

// GET http://127.0.0.1:port/path with a 5 s timeout; the body, or nullopt on any failure
// (refused, timeout, non-200 status).
std::optional<std::string> httpGet(int port, const std::string& path = "/metrics");

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;  // metric family name -> counter/gauge/histogram

  // Samples named `name` whose labels include every entry of `labels`.
  std::vector<Sample> find(const std::string& name,
                           const std::map<std::string, std::string>& labels = {}) const;
};

// Parses the Prometheus text format (as prometheus-cpp writes it). Throws std::runtime_error
// on a line it cannot read.
Exposition parseExposition(const std::string& text);

}  // namespace tessera::testing
