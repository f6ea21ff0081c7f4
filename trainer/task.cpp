#include "trainer/task.h"

#include <stdexcept>

namespace tessera::trainer {

double StepContext::lr(const std::string& optimizer) const {
  auto it = lrs.find(optimizer);
  if (it == lrs.end()) {
    throw std::logic_error("StepContext: no learning rate for optimizer '" + optimizer + "'");
  }
  return it->second;
}

bool StepResult::finite() const {
  for (const auto& u : updates) {
    if (!u.applied) return false;
  }
  return true;
}

bool StepResult::advanced() const {
  if (updates.empty()) return true;
  for (const auto& u : updates) {
    if (u.applied) return true;
  }
  return false;
}

}  // namespace tessera::trainer
