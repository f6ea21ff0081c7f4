// From the validated configuration to models and tasks: the one place that maps config structs
// to the plain option structs of models/ and comm/.
#pragma once

#include <c10/core/Device.h>

#include <memory>

#include "comm/grad_reducer.h"
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

std::unique_ptr<Task> makeTask(const TrainConfig& config, c10::Device device,
                               comm::Communicator& grads);

}  // namespace tessera::trainer
