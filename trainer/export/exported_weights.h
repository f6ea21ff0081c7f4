// Which parts of a checkpoint `tessera export` writes, under which names.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trainer/checkpoint/training_state.h"

namespace tessera::trainer {

struct ExportedWeights {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::string> metadata;
};

// The model's weights for users outside Tessera: every tensor under "model/" with that prefix
// removed ("model/encoder.0.weight" -> "encoder.0.weight"), then every EMA tensor under its full
// name ("ema/0.999/encoder.0.weight"), in checkpoint order. Optimizer state and anything else is
// left out. Metadata: "format" = "pt" (what safetensors loaders expect), "tessera_version",
// "tessera_checkpoint_format", every int and real of the state in decimal (e.g. "step") and
// every text verbatim (e.g. "config", the resolved YAML). Throws InputError when the state has no
// tensor under "model/".
ExportedWeights exportedWeights(const TrainingState& state);

}  // namespace tessera::trainer
