// The tasks Tessera can train, by name. A task registers its name, its own configuration
// sections, its optimizers (names and default settings) and a factory; the trainer, the config
// and the inference commands find it here and name no task themselves.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/image_shape.h"
#include "trainer/task.h"
#include "trainer/train_config.h"

namespace tessera::comm {
class Communicator;
}

namespace tessera::trainer {

// What a task is built for.
struct TaskEnvironment {
  c10::Device device = c10::Device(c10::kCPU);
  comm::Communicator* grads = nullptr;  // its gradient reducers' communicator
  data::ImageShape image;               // the training images (height, width, channels)
};

struct TaskRegistration {
  std::string name;  // `task:` in configs; stored in checkpoints
  std::string help;
  // The task's own sections with their defaults (null: none).
  std::function<std::unique_ptr<TaskConfig>()> sections;
  // The task's optimizers with their default settings, in update order. One optimizer is
  // configured as `optim.*`, several as `optim.<name>.*`.
  std::vector<NamedOptimizer> optimizers;
  std::function<std::unique_ptr<Task>(const TrainConfig&, const TaskEnvironment&)> make;
};

// Adds a task (the built-in ones are there from the start; tests add their own). A name that
// is already registered is replaced.
void registerTask(TaskRegistration task);
// The registration of `name`; ConfigError naming the known tasks (and the closest) otherwise.
const TaskRegistration& findTask(const std::string& name);
// Registered names in registration order.
std::vector<std::string> taskNames();

// Builds the task `config.task` names.
std::unique_ptr<Task> makeTask(const TrainConfig& config, const TaskEnvironment& environment);

}  // namespace tessera::trainer
