// From the validated configuration to models and tasks: the one place that maps config structs
// to the plain option structs of models/ and comm/.
#pragma once

#include <c10/core/Device.h>

#include <memory>

#include "comm/grad_reducer.h"
#include "comm/world.h"
#include "data/loader_options.h"
#include "models/vqvae.h"
#include "trainer/model_updater.h"
#include "trainer/task.h"
#include "trainer/train_config.h"

namespace tessera::comm {
class Communicator;
}

namespace tessera::trainer {

models::VqVaeOptions vqvaeOptions(const TrainConfig& config);
comm::GradReducerOptions reducerOptions(const CommConfig& config);
UpdaterOptions updaterOptions(const TrainConfig& config);
// The loader of data.train for this rank (pin_memory when training on CUDA).
data::LoaderOptions loaderOptions(const TrainConfig& config, const comm::World& world,
                                  bool pin_memory = false);

// The task `config.task` names, built from the registry of tasks (task_factory.cpp), its
// gradient reducers on `grads`.
std::unique_ptr<Task> makeTask(const TrainConfig& config, c10::Device device,
                               comm::Communicator& grads);

// The registered task names, in registration order.
std::vector<std::string> taskNames();

}  // namespace tessera::trainer
