// Which weights inference uses: the live parameters or an exponential moving average of them.
//
// A checkpoint holds each module's tensors as "<module>/<name>" and the EMAs of its trainable
// parameters as "ema/<module>/<decay>/<name>" (the optimizer of a module carries the module's
// name). Choosing EMA weights replaces each "<module>/<name>" by its EMA of the largest decay
// (the slowest average, the one samplers and evaluations conventionally use); buffers have no
// EMA and stay live.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace tessera::trainer {

enum class WeightChoice {
  kDefault,  // EMA when the checkpoint kept one for a module, else live
  kLive,
  kEma,  // EMA; an InputError when the checkpoint has none
};

// Parses "ema", "live" or "" (default); a UsageError names `option` otherwise.
WeightChoice parseWeightChoice(const std::string& text, const std::string& option);

// Rewrites `tensors` in place as described above for the module names given and returns what
// was chosen, for logs and outputs: "live" or "ema <decay>".
std::string selectWeights(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                          const std::vector<std::string>& modules, WeightChoice choice);

}  // namespace tessera::trainer
