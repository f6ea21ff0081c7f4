// Deadlines for collectives (docs/design.md, contract 6: no silent hang).
//
// Every wait on a collective is a polling loop with a deadline counted from the operation's
// launch. The loop backs off (a few spins, then yields, then short sleeps) because ranks are
// often oversubscribed: a pure busy-spin would steal the core of the very peer it waits for.
// When the deadline passes the waiter throws CommError with a message that says what it waited
// for; the front end turns that into exit code 3 and MPI_Abort, so the launcher tears the job
// down and the scheduler can requeue it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "comm/communicator.h"

namespace tessera::comm {

using SteadyClock = std::chrono::steady_clock;

// The pause between two polls of an operation that is not complete yet: none while spinning,
// then a yield (other threads of this process, e.g. the data loader, or other processes get the
// core; an idle core comes straight back), and after `spin + yield` sleeps growing to 0.5 ms.
// Spinning and yielding keep the latency of a collective low once the last peer arrives; on an
// oversubscribed node both should be short, because the core they burn may be the one the
// awaited peer needs.
class Backoff {
 public:
  explicit Backoff(std::chrono::microseconds spin = std::chrono::microseconds(50),
                   std::chrono::microseconds yield = std::chrono::milliseconds(2))
      : spin_(spin), yield_(yield) {}
  void pause();

 private:
  std::chrono::microseconds spin_;
  std::chrono::microseconds yield_;
  bool started_ = false;
  SteadyClock::time_point since_{};
};

class Watchdog {
 public:
  explicit Watchdog(std::chrono::milliseconds timeout);

  std::chrono::milliseconds timeout() const { return timeout_; }
  // How waits pause between polls (see Backoff).
  void setBackoff(std::chrono::microseconds spin, std::chrono::microseconds yield) {
    spin_ = spin;
    yield_ = yield;
  }

  // Calls poll() until it returns true, pausing between calls. Once `started + timeout` has
  // passed, throws CommError(describe()). Exceptions from poll() propagate.
  void waitFor(const std::function<bool()>& poll, SteadyClock::time_point started,
               const std::function<std::string()>& describe) const;

 private:
  std::chrono::milliseconds timeout_;
  std::chrono::microseconds spin_{50};
  std::chrono::microseconds yield_{2000};
};

// "allreduce grads[vqvae] bucket 2 (1.6 MB) at step 120 did not complete within 10 s".
std::string describeTimeout(const OpLabel& label, std::int64_t bytes,
                            std::chrono::milliseconds timeout);

// "opname what bucket 2 (1.6 MB) at step 120": how logs and errors name an operation.
std::string describeOp(const OpLabel& label, std::int64_t bytes);

// "512 B", "1.6 MB", "2.0 GB" (decimal units).
std::string formatBytes(std::int64_t bytes);

// "10 s", "250 ms", "1.5 s".
std::string formatDuration(std::chrono::milliseconds d);

}  // namespace tessera::comm
