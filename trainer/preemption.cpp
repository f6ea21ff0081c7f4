#include "trainer/preemption.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <map>
#include <sstream>

#include "core/error.h"

namespace tessera::trainer {
namespace {

std::atomic<int> g_first_signal{0};
std::atomic<int> g_count{0};
std::map<int, struct sigaction> g_previous;

void onSignal(int sig) {
  if (g_count.fetch_add(1) == 0) {
    g_first_signal.store(sig);
    return;
  }
  static const char msg[] = "tessera: second stop signal, exiting now without saving\n";
  (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
  ::_exit(kExitPreempted);
}

}  // namespace

PreemptionMonitor::PreemptionMonitor(const std::vector<int>& signals) : signals_(signals) {
  g_first_signal.store(0);
  g_count.store(0);
  for (int sig : signals_) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = onSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    struct sigaction old;
    sigaction(sig, &sa, &old);
    g_previous[sig] = old;
  }
}

PreemptionMonitor::~PreemptionMonitor() {
  for (int sig : signals_) sigaction(sig, &g_previous[sig], nullptr);
  g_previous.clear();
}

bool PreemptionMonitor::requested() const {
  return g_first_signal.load() != 0;
}
int PreemptionMonitor::signal() const {
  return g_first_signal.load();
}

std::vector<int> PreemptionMonitor::parseSignals(const std::string& names, const std::string& key) {
  static const std::map<std::string, int> known = {
      {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"INT", SIGINT}, {"HUP", SIGHUP}};
  std::vector<int> out;
  std::stringstream ss(names);
  for (std::string name; std::getline(ss, name, ',');) {
    if (name.rfind("SIG", 0) == 0) name = name.substr(3);
    auto it = known.find(name);
    if (it == known.end()) {
      throw ConfigError(key + ": unknown signal '" + name + "' (use TERM, USR1, USR2, INT, HUP)");
    }
    out.push_back(it->second);
  }
  return out;
}

}  // namespace tessera::trainer
