// From the validated configuration to models and tasks: the one place that maps config structs
// to the plain option structs of models/ and comm/, and the registry of tasks
// (trainer/task_registry.h).
#pragma once

#include <c10/core/Device.h>

#include <memory>

#include "comm/grad_reducer.h"
#include "comm/world.h"
#include "data/loader_options.h"
#include "models/vqvae.h"
#include "trainer/model_updater.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/task.h"
#include "trainer/task_registry.h"
#include "trainer/train_config.h"

namespace tessera::comm {
class Communicator;
}

namespace tessera::trainer {

models::VqVaeOptions vqvaeOptions(const TrainConfig& config, int in_channels);
comm::GradReducerOptions reducerOptions(const CommConfig& config);
// The settings of the task's optimizer `optimizer` (optim.* or optim.<optimizer>.*).
UpdaterOptions updaterOptions(const TrainConfig& config, const std::string& optimizer);
// Its learning-rate schedule.
LrScheduleOptions lrSchedule(const TrainConfig& config, const std::string& optimizer);
// The image shape data.image_size / data.channels ask for (zeros: whatever the file has).
data::ImageShape dataImageShape(const TrainConfig& config);
// The training images' shape for benchmarks: data.image_size x data.channels when both are set
// (the loader checks the file against them when it opens it), else data.train's; ConfigError
// when neither is known.
data::ImageShape trainingImageShape(const TrainConfig& config);
// The loader of data.train for this rank (pin_memory when training on CUDA).
data::LoaderOptions loaderOptions(const TrainConfig& config, const comm::World& world,
                                  bool pin_memory = false);

}  // namespace tessera::trainer
