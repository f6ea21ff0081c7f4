// How long a save keeps the training thread from training: asynchronous vs synchronous.
#pragma once

#include <cstdint>
#include <string>

#include "core/json.h"

namespace tessera::trainer {

// Saves a state of `bytes` float32 tensor bytes (three equal tensors) `repeats` times with a
// synchronous store and `repeats` times with an asynchronous one, in fresh subdirectories of
// `dir` (removed afterwards), and reports mean seconds per save:
//   sync_blocked_s         time inside save() of the synchronous store (write + fsync + commit)
//   async_blocked_s        time inside save() of the asynchronous store, the previous save done
//   async_snapshot_s       time to copy the state (host memcpy; what the training thread pays to
//                          hand a snapshot to the writer; a device-to-host copy on GPUs)
//   async_ratio            async_blocked_s / sync_blocked_s (goal <= 0.10)
//   async_ratio_with_snapshot   (async_blocked_s + async_snapshot_s) / sync_blocked_s
//   async_reused_snapshot_s     the copy into the previous snapshot's buffers instead (once that
//                               save finished), which avoids fresh allocations and page faults
//   async_ratio_with_reused_snapshot   the same ratio with the reused buffers
//   write_s, write_mb_per_s     the background write itself
// Throws Error when a save fails.
JsonObject benchmarkCheckpoint(const std::string& dir, std::int64_t bytes, int repeats = 5);

}  // namespace tessera::trainer
