// Where a run stands: the counters a checkpoint stores beside the model and that a resume or a
// rollback brings back.
#pragma once

#include <cstdint>

#include "data/data_position.h"

namespace tessera::trainer {

struct TrainingState;

struct RunCounters {
  std::int64_t step = 0;        // optimizer steps taken
  data::DataPosition position;  // where the next batch starts
  std::int64_t samples = 0;     // global samples consumed since the run began
  double lr_factor = 1.0;       // lowered by rollbacks
  std::int64_t skipped = 0;     // steps skipped as non-finite
  std::int64_t rollbacks = 0;

  // Writes them into `state` ("step", "epoch", "consumed", "samples", "skipped_steps",
  // "rollbacks", "lr_factor").
  void save(TrainingState& state) const;
  // Reads them back. A rollback takes only the step: the run keeps consuming new data (the
  // batches that diverged stay behind) and keeps its skip, rollback and lr-factor counts.
  void restore(const TrainingState& state, bool rollback);
};

}  // namespace tessera::trainer
