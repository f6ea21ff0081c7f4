// Which peers still answer, asked over plain TCP when a collective has timed out (issue 17).
//
// The shared-memory peer board (peer_board.h) sees only the ranks of one node. A rank whose
// collective timed out also wants to name the ranks it cannot reach at all: a partitioned or dead
// node, a frozen process. Every rank listens on a TCP port (any address, a port the kernel picks)
// and a thread of its own answers each connection with a short greeting (the job's token and its
// rank). The addresses are exchanged once at start-up through MPI; after a timeout the rank
// connects to every peer at once and waits a short while for the greetings. A peer that does not
// greet in time (no route, no answer, a stopped process whose kernel still accepts the
// connection) is unreachable. Nothing here runs during training, and the probe never uses MPI.
//
// TESSERA_PEER_PROBE=0 turns it off (timeout reports then say nothing about reachability).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::comm {

class PeerProbe {
 public:
  // Listens and starts answering. Throws Error when no socket can be opened.
  explicit PeerProbe(int rank);
  ~PeerProbe();
  PeerProbe(const PeerProbe&) = delete;
  PeerProbe& operator=(const PeerProbe&) = delete;

  // Where peers reach this rank: "ADDR[,ADDR...]:PORT" over every IPv4 address of this host.
  const std::string& address() const { return address_; }

  // Every rank's address in rank order (its own included) and the token every rank of the job
  // agrees on; greetings with another token (another job on a reused port) do not count.
  void setPeers(std::vector<std::string> addresses, std::uint64_t token);

  // The ranks (ascending, never this one) that did not greet within `timeout`, asked in parallel.
  std::vector<int> unreachable(std::chrono::milliseconds timeout) const;

  // False when TESSERA_PEER_PROBE is "0", "off" or "false".
  static bool enabled();

 private:
  struct Listener;
  int rank_;
  std::string address_;
  std::vector<std::string> peers_;
  std::uint64_t token_ = 0;
  std::unique_ptr<Listener> listener_;
};

// "rank 2 unreachable", "ranks 2, 3 unreachable"; "" for none.
std::string describeUnreachable(const std::vector<int>& ranks);

// A token from strings every rank holds alike (e.g. all the addresses): FNV-1a.
std::uint64_t probeToken(const std::vector<std::string>& parts);

}  // namespace tessera::comm
