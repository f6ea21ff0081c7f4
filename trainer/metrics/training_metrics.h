// Prometheus metrics of one rank, served over HTTP for a Prometheus server to scrape (pull).
//
// Every rank serves its own endpoint on bind:(port + local_rank), so ranks that share a node
// never collide and a scrape config lists one target per rank. Exposed series follow Prometheus
// conventions: prefix `tessera_`, base units (seconds, bytes, ratios in [0, 1]), `_total` for
// counters, histograms for durations; labels are `job` (the run name) and `rank`, plus `term`
// (loss terms), `name` (task values) and `model` (codebooks). Scrape with `honor_labels: true` so
// that Prometheus keeps the run name in `job` instead of renaming it to `exported_job`.
//
// Observability never stops training: a port that cannot be bound logs one warning and leaves
// the object in the not-serving state, where every update is a cheap no-op. Builds without
// prometheus-cpp (TESSERA_HAVE_PROMETHEUS 0) compile the same interface to no-ops.
//
// Thread safety: every method may be called from any thread (the training loop and the
// background checkpoint writer both report here).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tessera::trainer {

struct MetricsOptions {
  int port = 0;                    // base port; rank r serves on port + local_rank; 0 disables
  std::string bind = "127.0.0.1";  // address to listen on; "0.0.0.0" opens it to the network
  std::string job = "tessera";     // value of the `job` label (the run name)
  int rank = 0;                    // value of the `rank` label
  int local_rank = 0;              // offsets the port
};

class TrainingMetrics {
 public:
  // Starts serving when options.port > 0. Never throws for a port that cannot be bound (in use,
  // privileged, out of range): it logs a warning and serving() is false.
  explicit TrainingMetrics(const MetricsOptions& options);
  ~TrainingMetrics();
  TrainingMetrics(const TrainingMetrics&) = delete;
  TrainingMetrics& operator=(const TrainingMetrics&) = delete;

  bool serving() const;
  // The port actually served (options.port + local_rank), 0 when not serving.
  int port() const;

  // One optimizer step of this rank finished: `samples` it processed in the step (the sum over
  // ranks is the global batch), the step's wall time and the part of it spent waiting for data.
  void stepCompleted(std::int64_t samples, double step_seconds, double data_wait_seconds);
  // The global step number (resumed runs continue it, unlike the per-process _total counters).
  void setStep(std::int64_t step);
  void setLoss(const std::string& term, double value);
  // A named value of the task (tessera_task_value{name}); the trainer forwards every value a
  // task publishes without knowing its name.
  void taskValue(const std::string& name, double value);
  void setLearningRate(double lr);
  void setGradNorm(double norm);
  // One step's gradient all-reduce: time this rank waited in it, bytes it reduced, and the
  // fraction of the communication hidden behind backward computation (0..1).
  void allReduce(double seconds, std::int64_t bytes, double overlap_fraction);
  void setSamplesPerSecond(double v);
  // Codebook health of quantizer `model`: usage = fraction of codes used in the recent window,
  // restarts_total = dead-code restarts since the run began (a running total, not a delta).
  void codebook(const std::string& model, double usage, double perplexity, std::int64_t dead_codes,
                std::int64_t restarts_total);
  void gan(double adaptive_weight, double logits_real, double logits_fake);
  // A checkpoint was committed: write duration, file size and the commit's Unix time.
  void checkpointSaved(double seconds, std::int64_t bytes, double unix_time);
  void checkpointFailed();
  // A step skipped for non-finite loss or gradients (agreed across ranks).
  void skippedStep();
  void deviceMemory(double bytes);
  void modelFlopsUtilization(double mfu);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;  // null when not serving
  int port_ = 0;
};

}  // namespace tessera::trainer
