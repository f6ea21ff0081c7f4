// Inference commands (eval, reconstruct, sample) rebuild the task a checkpoint names, from the
// configuration stored in it, and ask that task; no command knows which tasks exist.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "data/image_shape.h"
#include "trainer/task.h"
#include "trainer/train_config.h"
#include "trainer/weights.h"

namespace tessera::comm {
class Communicator;
}
namespace tessera::data {
class ImageFile;
}

namespace tessera::trainer {

struct LoadedTask {
  TrainConfig config;                         // the checkpoint's stored configuration
  std::unique_ptr<comm::Communicator> grads;  // the task's reducers live on it (declared first:
  std::unique_ptr<Task> task;                 // destroyed after the task)
  std::int64_t step = 0;
  std::string weights;  // "live" or "ema <decay>"
};

// Reads `checkpoint` (InputError naming it when it is unreadable, has no stored configuration,
// or names a task this build does not have), builds its task on `device` with reducers on
// `grads` and restores the chosen weights.
LoadedTask loadTask(const std::string& checkpoint, WeightChoice weights, c10::Device device,
                    std::unique_ptr<comm::Communicator> grads);

// The image shape the task's model takes (for opening data files).
data::ImageShape modelImageShape(const TrainConfig& config);

// Images [start, start + count) of `file` as model input: NCHW floats in [-1, 1] on the CPU,
// through the one uint8 -> float conversion that training uses (data::modelInput). Evaluation and
// previews read through it.
at::Tensor readImages(const data::ImageFile& file, std::int64_t start, std::int64_t count);
// The first `n` images of `file` (fewer when it has fewer).
at::Tensor readFirstImages(const data::ImageFile& file, std::int64_t n);

// A PNG grid of rows of originals over rows of their reconstructions, `columns` images wide
// (both [N, C, H, W] in [-1, 1]). Training previews and `tessera reconstruct` write the same.
void writeReconstructionGrid(const std::string& path, const at::Tensor& images,
                             const at::Tensor& reconstructions, std::int64_t columns);

}  // namespace tessera::trainer
