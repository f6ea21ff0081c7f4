// The run's checkpoint directory: atomic, verified, optionally asynchronous saves and the
// newest-that-verifies load. Only rank 0 owns a store; it knows nothing of MPI.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "trainer/checkpoint/training_state.h"

namespace tessera::trainer {

struct CheckpointStoreOptions {
  std::string dir;
  int keep_last = 3;            // newest checkpoints kept (>= 1)
  std::int64_t keep_every = 0;  // also keep steps that are multiples of this (0: none)
  bool async = true;            // write on a background thread
};

struct SaveStats {
  std::int64_t saves = 0;         // committed saves
  std::int64_t failed_saves = 0;  // saves that failed (logged; earlier checkpoints intact)
  double last_seconds = 0;        // wall time of the last committed save (write + commit)
  std::int64_t last_bytes = 0;    // tensor bytes of the last committed save
  double last_success_unix = 0;   // when the last save committed (seconds since the epoch)
  double blocked_seconds = 0;     // caller's time inside save() and wait(), all saves together
  std::int64_t last_committed_step = -1;
};

// "step-00000042.h5": the file name of a step's checkpoint (8 digits at least).
std::string checkpointFileName(std::int64_t step);
// The step of a checkpoint file name ("step-<digits>.h5", no directory), or nullopt.
std::optional<std::int64_t> checkpointStepOf(const std::string& file_name);

// Files in `dir`: step-<N>.h5 (committed checkpoints), step-<N>.h5.tmp (being written, or left by
// a crash), latest (one line: the file name of the newest committed checkpoint), latest.tmp.
// One store per directory and process; its methods are called from one (training) thread.
class CheckpointStore {
 public:
  // Creates `options.dir` (throws Error when it cannot) and deletes stale step-*.h5.tmp and
  // latest.tmp left by an earlier process, logging each. Throws ConfigError for keep_last < 1 or
  // keep_every < 0.
  explicit CheckpointStore(CheckpointStoreOptions options);
  // Waits for a pending save.
  ~CheckpointStore();
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;

  // Saves `state` as <dir>/step-<8-digit step>.h5: writes step-N.h5.tmp, fsyncs it, renames it,
  // fsyncs the directory, then replaces `latest` the same way; only then deletes checkpoints that
  // keep_last/keep_every no longer keep (never the one just committed). A save of a step that
  // already has a checkpoint replaces it atomically.
  // async: waits for the previous save, then returns while a background thread writes; `state`'s
  // tensors must not be written to until this save is finished (pass owned copies).
  // Throws Error only for a state that cannot be written at all (validateTrainingState), before
  // anything is touched. I/O failures (disk full, permission, I/O error) never throw: they are
  // logged with the path and reason and counted, the .tmp is removed, and every earlier
  // checkpoint and `latest` are left as they were.
  void save(TrainingState state);

  // Waits for the pending save. Returns the outcome (true: committed) of the most recent save not
  // yet reported by wait()/poll(), nullopt when there is none.
  std::optional<bool> wait();
  // Like wait() without blocking: nullopt while a save is still running or when nothing
  // finished since the last wait()/poll().
  std::optional<bool> poll();

  // Committed checkpoints (full paths), newest step first.
  std::vector<std::string> list() const;

  // The newest checkpoint that verifies: the one `latest` names first, then the others by step,
  // newest first; each skipped one is logged with the reason, as is a missing or malformed
  // `latest`. nullopt when none verifies. Sets *path to the file loaded. Does not wait for a
  // pending save.
  std::optional<TrainingState> loadLatest(std::string* path = nullptr) const;

  SaveStats stats() const;
  const std::string& dir() const { return options_.dir; }

 private:
  bool commit(const TrainingState& state);  // never throws
  void commitOrThrow(const TrainingState& state, const std::string& final_path,
                     const std::string& tmp_path);
  void prune(std::int64_t committed_step);
  void joinWorker();
  void finish(bool ok);  // records the outcome of a save; called by the thread that ran it

  CheckpointStoreOptions options_;
  mutable std::mutex mu_;
  std::thread worker_;              // the running or finished async save
  bool running_ = false;            // guarded by mu_
  std::optional<bool> unreported_;  // guarded by mu_
  SaveStats stats_;                 // guarded by mu_
};

}  // namespace tessera::trainer
