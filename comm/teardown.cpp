#include "comm/teardown.h"

#include <atomic>
#include <csignal>
#include <initializer_list>

namespace tessera::comm {
namespace {

std::atomic<int> g_stop_signals{0};
std::atomic<bool> g_shielded{false};
static_assert(std::atomic<int>::is_always_lock_free);

}  // namespace

void noteStopSignal() {
  g_stop_signals.fetch_add(1, std::memory_order_relaxed);
}

int stopSignalCount() {
  return g_stop_signals.load(std::memory_order_relaxed);
}

void shieldFromTeardown() {
  g_shielded.store(true);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) std::signal(sig, SIG_IGN);
}

bool teardownShielded() {
  return g_shielded.load();
}

}  // namespace tessera::comm
