// Learning rate as a pure function of the step: nothing to save, exact on resume.
#pragma once

#include <cstdint>

namespace tessera::trainer {

enum class LrSchedule;

struct LrScheduleOptions {
  double peak = 2e-4;
  double min = 0;
  std::int64_t warmup_steps = 0;  // linear from peak/warmup_steps to peak
  std::int64_t total_steps = 1;
  bool cosine = false;  // else constant after warm-up
};

// The learning rate for (0-based) `step`.
double learningRate(const LrScheduleOptions& options, std::int64_t step);

}  // namespace tessera::trainer
