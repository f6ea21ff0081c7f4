// What the loop reports every `run.log_every` steps: loss terms by name, per-optimizer outcomes,
// throughput, data wait and communication, accumulated step by step without reading the device
// (loss terms stay device tensors until the report) and reduced over ranks in one all-reduce.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"
#include "trainer/task.h"

namespace tessera::comm {
class Communicator;
struct ReducerStats;
}  // namespace tessera::comm

namespace tessera::trainer {

class StepLog {
 public:
  // One step: its result, the global samples it consumed and the seconds it waited for data.
  // Loss terms count only in steps whose updates were all finite; each term is averaged over
  // the steps that had it (terms that start mid-run are not diluted).
  void add(const StepResult& result, std::int64_t global_samples, double data_wait_seconds,
           const std::vector<const comm::ReducerStats*>& comm);

  std::int64_t steps() const { return steps_; }  // steps recorded since the last report

  struct Report {
    std::vector<std::pair<std::string, double>> losses;  // means over ranks and steps
    std::vector<OptimizerOutcome> optimizers;            // last outcome of each optimizer
    std::vector<std::pair<std::string, std::int64_t>> applied, skipped;  // per optimizer
    double seconds = 0, steps_per_s = 0, samples_per_s = 0, data_wait_fraction = 0;
    double comm_seconds_per_step = 0, comm_hidden_fraction = 0;

    // Adds the fields above to a metrics.jsonl line: each loss term by name, "lr" and
    // "grad_norm" of the first optimizer and "<optimizer>/lr", "<optimizer>/grad_norm",
    // "<optimizer>/applied", "<optimizer>/skipped" for each.
    void addTo(JsonObject& line) const;
    // " loss 0.01234 recon 0.01000 ..." for the log line.
    std::string lossText() const;
  };

  // Every rank calls it at the same step: loss sums and counts are summed over `control`'s
  // ranks (one all-reduce). Starts a new window.
  Report reduce(comm::Communicator& control, std::int64_t step);

 private:
  struct Term {
    std::string name;
    at::Tensor sum;  // double, on the device of the loss
    std::int64_t count = 0;
  };
  struct Optimizer {
    OptimizerOutcome last;
    std::int64_t applied = 0, skipped = 0;
  };

  std::vector<Term> terms_;
  std::vector<Optimizer> optimizers_;
  std::int64_t steps_ = 0, samples_ = 0, bytes_ = 0;
  double data_wait_ = 0, comm_ = 0, exposed_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace tessera::trainer
