#include "trainer/inference.h"

#include <torch/torch.h>

#include "comm/communicator.h"
#include "core/error.h"
#include "data/image_file.h"
#include "data/image_grid.h"
#include "data/image_transform.h"
#include "trainer/checkpoint/checkpoint_file.h"
#include "trainer/state_io.h"
#include "trainer/task_factory.h"

namespace tessera::trainer {

LoadedTask loadTask(const std::string& checkpoint, WeightChoice weights, c10::Device device,
                    std::unique_ptr<comm::Communicator> grads) {
  TrainingState state = readCheckpointFile(checkpoint);
  auto text = state.texts.find("config");
  if (text == state.texts.end()) {
    throw InputError(checkpoint + ": checkpoint has no stored configuration ('config')");
  }
  LoadedTask out;
  out.config = parseTrainConfig(text->second, checkpoint + " (stored config)");
  out.grads = std::move(grads);
  TaskEnvironment env;
  env.device = device;
  env.grads = out.grads.get();
  env.image = modelImageShape(out.config);
  out.task = makeTask(out.config, env);
  if (auto name = state.texts.find("task");
      name != state.texts.end() && name->second != out.task->name()) {
    throw InputError(checkpoint + ": the checkpoint was written by task '" + name->second +
                     "' but its stored configuration builds task '" + out.task->name() + "'");
  }
  const ModuleList modules = out.task->modules();
  std::vector<std::string> names;
  for (const auto& [name, module] : modules) names.push_back(name);
  try {
    out.weights = selectWeights(state.tensors, names, weights);
  } catch (const InputError& e) {
    throw InputError(checkpoint + ": " + e.what());
  }
  restoreModules(modules, tensorMap(state));
  for (const auto& [name, module] : modules) module->eval();
  out.step = state.step();
  return out;
}

data::ImageShape modelImageShape(const TrainConfig& c) {
  if (c.data.image_size <= 0 || c.data.channels <= 0) {
    throw InputError(
        "the stored configuration has no image shape (data.image_size, "
        "data.channels): the checkpoint was written by an older Tessera");
  }
  return dataImageShape(c);
}

at::Tensor readImages(const data::ImageFile& file, std::int64_t start, std::int64_t count) {
  const data::ImageShape& shape = file.shape();
  at::Tensor raw = torch::empty({count, shape.height, shape.width, shape.channels}, torch::kUInt8);
  file.readRange(start, count, raw.data_ptr<std::uint8_t>());
  return data::modelInput(raw);
}

at::Tensor readFirstImages(const data::ImageFile& file, std::int64_t n) {
  return readImages(file, 0, std::min<std::int64_t>(n, file.size()));
}

void writeReconstructionGrid(const std::string& path, const at::Tensor& images,
                             const at::Tensor& reconstructions, std::int64_t columns) {
  const at::Tensor x = images.cpu(), recon = reconstructions.cpu();
  const std::int64_t n = x.size(0);
  columns = std::max<std::int64_t>(1, std::min(columns, n));
  std::vector<at::Tensor> rows;
  for (std::int64_t i = 0; i < n; i += columns) {
    const std::int64_t len = std::min(columns, n - i);
    at::Tensor top = x.slice(0, i, i + len), bottom = recon.slice(0, i, i + len);
    if (len < columns) {
      const auto pad =
          torch::full({columns - len, x.size(1), x.size(2), x.size(3)}, -1.0, x.options());
      top = at::cat({top, pad});
      bottom = at::cat({bottom, pad});
    }
    rows.push_back(top);
    rows.push_back(bottom);
  }
  data::writeImageGrid(path, at::cat(rows), static_cast<int>(columns));
}

}  // namespace tessera::trainer
