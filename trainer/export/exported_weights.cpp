#include "trainer/export/exported_weights.h"

#include <charconv>

#include "core/error.h"
#include "tessera/config.h"
#include "trainer/checkpoint/checkpoint_file.h"

namespace tessera::trainer {

ExportedWeights exportedWeights(const TrainingState& state) {
  static const std::string kModel = "model/", kEma = "ema/";
  ExportedWeights out;
  for (const auto& [name, tensor] : state.tensors) {
    if (name.rfind(kModel, 0) == 0) out.tensors.emplace_back(name.substr(kModel.size()), tensor);
  }
  if (out.tensors.empty()) {
    throw InputError("the checkpoint has no model weights (no tensor under 'model/')");
  }
  for (const auto& [name, tensor] : state.tensors) {
    if (name.rfind(kEma, 0) == 0) out.tensors.emplace_back(name, tensor);
  }
  for (const auto& [key, value] : state.ints) out.metadata[key] = std::to_string(value);
  for (const auto& [key, value] : state.reals) {
    char buf[64];
    const auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;  // shortest exact form
    out.metadata[key] = std::string(buf, end);
  }
  for (const auto& [key, value] : state.texts) out.metadata[key] = value;
  out.metadata["format"] = "pt";
  out.metadata["tessera_version"] = TESSERA_VERSION;
  out.metadata["tessera_checkpoint_format"] = std::to_string(kCheckpointFormatVersion);
  return out;
}

}  // namespace tessera::trainer
