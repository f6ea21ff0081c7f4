// Rank 0's view of training progress for a person watching: step/total, loss, steps/s,
// samples/s and ETA.
//
// On a terminal (stderr is a tty) it keeps one self-overwriting line, redrawn at most ten times
// a second; otherwise (Slurm logs, files, pipes) it writes a plain log line every `every` steps
// and at the last step, so logs stay readable and grep-able. Rates are smoothed over roughly
// the last ten seconds, so the ETA follows speed changes without jumping at every step.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace tessera::trainer {

// Human-readable duration: "45s", "3m07s", "2h05m", "3d04h"; "?" for negative or non-finite.
std::string formatDuration(double seconds);

class ProgressReporter {
 public:
  enum class Mode { kTerminal, kLog };
  using Clock = std::function<double()>;  // monotonic seconds

  // Mode from isatty(stderr); `enabled` false (ranks other than 0, log.progress off) makes every
  // call a no-op. `start_step` is the step a resumed run starts from; `every` >= 1.
  ProgressReporter(std::int64_t total_steps, std::int64_t start_step, std::int64_t every,
                   bool enabled);
  // Explicit mode, terminal stream (used in kTerminal mode) and clock; for tests.
  ProgressReporter(std::int64_t total_steps, std::int64_t start_step, std::int64_t every,
                   bool enabled, Mode mode, std::FILE* terminal, Clock clock);
  ~ProgressReporter();
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  // Step `step` (1-based count of completed steps) finished with this loss and global
  // throughput (samples per second; <= 0 when unknown).
  void update(std::int64_t step, double loss, double samples_per_second);

  // Shows the last state and ends the terminal line. Called by the destructor if not before.
  void finish();

  // The text of the current progress line (without terminal control characters).
  std::string line() const;

 private:
  void draw();

  std::int64_t total_;
  std::int64_t every_;
  bool enabled_;
  Mode mode_;
  std::FILE* terminal_;
  Clock clock_;

  std::int64_t step_;
  std::int64_t last_logged_step_;
  double loss_ = 0;
  double samples_per_second_ = 0;
  double steps_per_second_ = 0;  // smoothed; 0 until the first measured interval
  double last_time_;
  std::int64_t last_rate_step_;
  double last_draw_ = -1e300;
  bool line_open_ = false;  // a terminal line is drawn and not yet ended by a newline
  bool finished_ = false;
};

}  // namespace tessera::trainer
