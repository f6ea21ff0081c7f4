#include "comm/watchdog.h"

#include <algorithm>
#include <cstdio>
#include <thread>

#include "core/error.h"

namespace tessera::comm {

void Backoff::pause() {
  const auto now = SteadyClock::now();
  if (!started_) {
    started_ = true;
    since_ = now;
  }
  const auto waited = now - since_;
  if (waited < spin_) return;
  if (waited < spin_ + yield_) {
    std::this_thread::yield();
    return;
  }
  const auto sleeping = waited - spin_ - yield_;
  const auto sleep_us = std::min<std::int64_t>(
      500, 20 + std::chrono::duration_cast<std::chrono::milliseconds>(sleeping).count());
  std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
}

Watchdog::Watchdog(std::chrono::milliseconds timeout) : timeout_(timeout) {
  if (timeout_.count() <= 0) {
    throw UsageError("communication timeout must be positive, got " +
                     std::to_string(timeout_.count()) + " ms");
  }
}

void Watchdog::waitFor(const std::function<bool()>& poll, SteadyClock::time_point started,
                       const std::function<std::string()>& describe) const {
  const auto deadline = started + timeout_;
  Backoff backoff(spin_, yield_);
  while (!poll()) {
    if (SteadyClock::now() >= deadline) throw CommError(describe());
    backoff.pause();
  }
}

std::string formatBytes(std::int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes < 1000) {
    std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(bytes));
  } else if (b < 1e6) {
    std::snprintf(buf, sizeof(buf), "%.1f kB", b / 1e3);
  } else if (b < 1e9) {
    std::snprintf(buf, sizeof(buf), "%.1f MB", b / 1e6);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f GB", b / 1e9);
  }
  return buf;
}

std::string formatDuration(std::chrono::milliseconds d) {
  char buf[32];
  const auto ms = d.count();
  if (ms < 1000) {
    std::snprintf(buf, sizeof(buf), "%lld ms", static_cast<long long>(ms));
  } else if (ms % 1000 == 0) {
    std::snprintf(buf, sizeof(buf), "%lld s", static_cast<long long>(ms / 1000));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f s", static_cast<double>(ms) / 1000.0);
  }
  return buf;
}

std::string describeOp(const OpLabel& label, std::int64_t bytes) {
  std::string s = label.op.empty() ? std::string("collective") : label.op;
  if (!label.what.empty()) s += " " + label.what;
  if (label.bucket >= 0) s += " bucket " + std::to_string(label.bucket);
  if (bytes >= 0) s += " (" + formatBytes(bytes) + ")";
  if (label.step >= 0) s += " at step " + std::to_string(label.step);
  return s;
}

std::string describeTimeout(const OpLabel& label, std::int64_t bytes,
                            std::chrono::milliseconds timeout) {
  return describeOp(label, bytes) + " did not complete within " + formatDuration(timeout);
}

}  // namespace tessera::comm
