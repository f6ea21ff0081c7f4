#include "trainer/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace tessera::trainer {

double learningRate(const LrScheduleOptions& o, std::int64_t step) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    return o.peak * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  if (!o.cosine) return o.peak;
  const double span =
      static_cast<double>(std::max<std::int64_t>(1, o.total_steps - o.warmup_steps));
  const double t = std::clamp(static_cast<double>(step - o.warmup_steps) / span, 0.0, 1.0);
  return o.min + 0.5 * (o.peak - o.min) * (1 + std::cos(M_PI * t));
}

}  // namespace tessera::trainer
