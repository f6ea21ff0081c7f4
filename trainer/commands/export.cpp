// `tessera export`: a checkpoint's weights as safetensors, for Python users.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "trainer/checkpoint/checkpoint_file.h"
#include "trainer/cli.h"
#include "trainer/export/exported_weights.h"
#include "trainer/export/safetensors.h"
#include "trainer/weights.h"

namespace tessera::trainer {

int runExport(const ExportArgs& args) {
  if (args.format != "safetensors") {
    throw UsageError("export --format: '" + args.format + "' is not one of: safetensors");
  }
  TrainingState state = readCheckpointFile(args.checkpoint);
  const WeightChoice choice = parseWeightChoice(args.weights, "--weights");
  ExportedWeights weights;
  try {
    // Exported names drop the "model/" prefix; with EMA weights those tensors hold the EMA.
    const std::string chosen = selectWeights(state.tensors, {"model"}, choice);
    weights = exportedWeights(state);
    weights.metadata["weights"] = chosen;
  } catch (const InputError& e) {
    throw InputError("checkpoint " + args.checkpoint + ": " + e.what());
  }
  writeSafetensors(args.out, weights.tensors, weights.metadata);
  std::int64_t bytes = 0;
  for (const auto& entry : weights.tensors) bytes += entry.second.nbytes();
  spdlog::info("exported {} tensors ({:.1f} MiB) of {} (step {}) to {}", weights.tensors.size(),
               static_cast<double>(bytes) / (1 << 20), args.checkpoint,
               weights.metadata.count("step") ? weights.metadata.at("step") : "?", args.out);
  return kExitOk;
}

}  // namespace tessera::trainer
