// Moving a training run's state between live objects, host snapshots and other ranks.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "trainer/checkpoint/training_state.h"
#include "trainer/task.h"

namespace tessera::comm {
class Communicator;
}

namespace tessera::trainer {

using ModuleList = std::vector<std::pair<std::string, torch::nn::Module*>>;

// "<module>/<parameter or buffer name>" for every parameter and buffer (live tensors, no copy).
NamedTensors moduleTensors(const ModuleList& modules);

// A host-memory copy of the modules and the task's state (safe to write while training goes on).
// Tensors of `reuse` with the same name, shape and dtype are overwritten instead of allocating
// new ones (fresh memory costs page faults that dominate an asynchronous save); the caller must
// make sure no save still reads them.
TrainingState snapshot(const Task& task, const ModuleList& modules,
                       const TrainingState* reuse = nullptr);

// Copies the modules' tensors back from `tensors`; InputError naming the first missing tensor or
// shape mismatch (e.g. a checkpoint of a differently configured model).
void restoreModules(const ModuleList& modules, const std::map<std::string, at::Tensor>& tensors);

// Tensors of a state by name.
std::map<std::string, at::Tensor> tensorMap(const TrainingState& state);

// Makes rank 0's `state` every rank's: metadata as one string, tensor bytes as one buffer, both
// broadcast over `control` (MPI, CPU). Other ranks pass nullopt. Every rank returns the state, or
// nullopt on every rank when rank 0 had none.
std::optional<TrainingState> broadcastState(comm::Communicator& control,
                                            const std::optional<TrainingState>& state);

// Broadcasts rank `root`'s string.
std::string broadcastString(comm::Communicator& control, const std::string& text, int root = 0);

}  // namespace tessera::trainer
