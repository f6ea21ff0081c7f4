// The training loop shared by every task:
//
//   for each step: batch <- loader; task.step(batch) (forward, backward with overlapped gradient
//   all-reduce, agreed finiteness, optimizer/EMA/codebook update); report; maybe save; ranks
//   agree whether to stop (signal, time budget).
//
// Cross-cutting concerns are small classes beside it: CheckpointStore, PreemptionMonitor,
// TrainingMetrics, ProgressReporter.
#pragma once

#include <string>

#include "trainer/train_config.h"

namespace tessera::comm {
class MpiSession;
}

namespace tessera::trainer {

struct TrainerOptions {
  TrainConfig config;
  std::string run_dir;  // holds config.yaml, checkpoints/, samples/, metrics.jsonl
  std::string resume;   // explicit checkpoint to start from ("" = newest in run_dir)
  bool no_resume = false;
};

struct TrainingSummary {
  std::int64_t steps = 0;
  std::int64_t skipped_steps = 0;
  double seconds = 0;
};

// Trains to config.run.steps. Throws Preempted (exit code 75) after an agreed stop has been
// saved, Diverged when non-finite steps persist through the allowed rollbacks, CommError on a
// collective timeout.
TrainingSummary train(const TrainerOptions& options, const comm::MpiSession& mpi);

}  // namespace tessera::trainer
