#include "trainer/weights.h"

#include <cstdlib>
#include <map>

#include "core/error.h"

namespace tessera::trainer {

WeightChoice parseWeightChoice(const std::string& text, const std::string& option) {
  if (text.empty()) return WeightChoice::kDefault;
  if (text == "ema") return WeightChoice::kEma;
  if (text == "live") return WeightChoice::kLive;
  throw UsageError(option + ": expected 'ema' or 'live', got '" + text + "'");
}

std::string selectWeights(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                          const std::vector<std::string>& modules, WeightChoice choice) {
  if (choice == WeightChoice::kLive) return "live";
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  std::string chosen;
  for (const std::string& module : modules) {
    // The largest decay stored for this module.
    const std::string prefix = "ema/" + module + "/";
    std::string rate;
    for (const auto& [name, t] : tensors) {
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string r =
          name.substr(prefix.size(), name.find('/', prefix.size()) - prefix.size());
      if (rate.empty() || std::strtod(r.c_str(), nullptr) > std::strtod(rate.c_str(), nullptr))
        rate = r;
    }
    if (rate.empty()) continue;
    const std::string from = prefix + rate + "/";
    for (auto& [name, t] : tensors) {
      if (name.compare(0, module.size() + 1, module + "/") != 0) continue;
      auto it = index.find(from + name.substr(module.size() + 1));
      if (it != index.end()) t = tensors[it->second].second;
    }
    chosen = "ema " + rate;
  }
  if (chosen.empty()) {
    if (choice == WeightChoice::kEma) {
      throw InputError(
          "--weights ema: the checkpoint has no weight EMA (train with optim.ema, "
          "e.g. optim.ema=[0.999])");
    }
    return "live";
  }
  return chosen;
}

}  // namespace tessera::trainer
