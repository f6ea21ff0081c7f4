// Turns stop signals into a flag the training loop reads at step boundaries (docs/design.md,
// contract 4: ranks then agree, all save the same step and exit with kExitPreempted). A second
// signal exits at once with kExitPreempted, without saving: the last committed checkpoint stands.
#pragma once

#include <string>
#include <vector>

namespace tessera::trainer {

class PreemptionMonitor {
 public:
  // Installs handlers for `signals` for the monitor's lifetime (only one monitor at a time).
  explicit PreemptionMonitor(const std::vector<int>& signals);
  ~PreemptionMonitor();
  PreemptionMonitor(const PreemptionMonitor&) = delete;
  PreemptionMonitor& operator=(const PreemptionMonitor&) = delete;

  bool requested() const;
  int signal() const;  // the first signal received, 0 if none

  // "TERM,USR1" -> {SIGTERM, SIGUSR1}; UsageError naming `key` for an unknown name.
  static std::vector<int> parseSignals(const std::string& names, const std::string& key);

 private:
  std::vector<int> signals_;
};

}  // namespace tessera::trainer
