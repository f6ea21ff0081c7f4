// A host-memory snapshot of everything needed to resume training exactly.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera::trainer {

// What one checkpoint holds. Tensors are CPU tensors that nothing else writes to while a save is
// in flight (owned copies taken at a step boundary). Names use '/' as the group separator, e.g.
// "model/encoder.0.weight", "optim/0/exp_avg", "ema/0.999/encoder.0.weight"; each component is
// non-empty, not "." or "..", and names contain no newline. Keys of ints/reals/texts are unique
// across the three maps, contain no newline and do not start with "tessera_" (reserved for the
// file format). Texts contain no NUL byte.
struct TrainingState {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::int64_t> ints;  // "step", "epoch", "samples", "world_size", ...
  std::map<std::string, double> reals;
  std::map<std::string, std::string> texts;  // "config" (resolved YAML), ...

  // ints.at("step"); throws Error naming the missing key.
  std::int64_t step() const;
  // Tensor payload bytes (sum of nbytes()).
  std::int64_t bytes() const;
  // The tensor stored under `name`, or nullptr.
  const at::Tensor* find(const std::string& name) const;
};

}  // namespace tessera::trainer
