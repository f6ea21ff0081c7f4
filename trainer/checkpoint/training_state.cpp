#include "trainer/checkpoint/training_state.h"

#include "core/error.h"

namespace tessera::trainer {

std::int64_t TrainingState::step() const {
  const auto it = ints.find("step");
  if (it == ints.end()) throw Error("training state has no integer 'step'");
  return it->second;
}

std::int64_t TrainingState::bytes() const {
  std::int64_t total = 0;
  for (const auto& entry : tensors) {
    if (entry.second.defined()) total += static_cast<std::int64_t>(entry.second.nbytes());
  }
  return total;
}

const at::Tensor* TrainingState::find(const std::string& name) const {
  for (const auto& entry : tensors) {
    if (entry.first == name) return &entry.second;
  }
  return nullptr;
}

}  // namespace tessera::trainer
