#include "trainer/run_counters.h"

#include "trainer/checkpoint/training_state.h"

namespace tessera::trainer {

void RunCounters::save(TrainingState& s) const {
  s.ints["step"] = step;
  s.ints["epoch"] = position.epoch;
  s.ints["consumed"] = position.consumed;
  s.ints["samples"] = samples;
  s.ints["skipped_steps"] = skipped;
  s.ints["rollbacks"] = rollbacks;
  s.reals["lr_factor"] = lr_factor;
}

void RunCounters::restore(const TrainingState& s, bool rollback) {
  auto get = [&](const char* key, std::int64_t fallback) {
    auto it = s.ints.find(key);
    return it == s.ints.end() ? fallback : it->second;
  };
  step = get("step", 0);
  if (rollback) return;
  position = {get("epoch", 0), get("consumed", 0)};
  samples = get("samples", 0);
  skipped = get("skipped_steps", 0);
  rollbacks = get("rollbacks", 0);
  if (auto it = s.reals.find("lr_factor"); it != s.reals.end()) lr_factor = it->second;
}

}  // namespace tessera::trainer
