// Test-only switches of `debug.*`, kept out of the loop and out of the Task interface: a rank
// that reports steps as non-finite (as a NaN loss or gradient would make it), and a dump of
// each step's dataset indices.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>

#include "trainer/train_config.h"

namespace tessera::trainer {

class FaultInjection {
 public:
  FaultInjection(const DebugConfig& debug, int rank, const std::filesystem::path& run_dir);

  // Whether this rank reports its `attempt`-th step attempt (0-based, skipped ones included)
  // as non-finite (debug.nan_at_step, nan_steps, nan_rank).
  bool nonFinite(std::int64_t attempt) const;
  // Appends "<step> <index>..." to run_dir/indices-rank<r>.txt (debug.dump_indices).
  void recordIndices(std::int64_t step, const at::Tensor& indices);

 private:
  DebugConfig debug_;
  int rank_;
  std::unique_ptr<std::ofstream> indices_;
};

}  // namespace tessera::trainer
