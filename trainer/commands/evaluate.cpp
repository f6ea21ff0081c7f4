// `tessera eval` and `tessera reconstruct`: a checkpoint's model on an HDF5 dataset.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/image_file.h"
#include "data/image_grid.h"
#include "trainer/checkpoint/checkpoint_file.h"
#include "trainer/cli.h"
#include "trainer/comm_stats_reducer.h"
#include "trainer/device.h"
#include "trainer/evaluation.h"
#include "trainer/state_io.h"
#include "trainer/task_factory.h"
#include "trainer/tasks/vqvae_task.h"

namespace tessera::trainer {
namespace {

struct LoadedModel {
  TrainConfig config;
  models::VqVae model{nullptr};
  std::int64_t step = 0;
};

LoadedModel loadModel(const std::string& checkpoint, c10::Device device) {
  const TrainingState state = readCheckpointFile(checkpoint);
  auto text = state.texts.find("config");
  if (text == state.texts.end()) {
    throw InputError(checkpoint + ": checkpoint has no stored configuration ('config')");
  }
  LoadedModel out;
  out.config = parseTrainConfig(text->second, checkpoint + " (stored config)");
  out.model =
      makeVqVae(vqvaeOptions(out.config), static_cast<std::uint64_t>(out.config.run.seed), device);
  restoreModules({{"model", out.model.get()}}, tensorMap(state));
  out.model->eval();
  out.step = state.step();
  return out;
}

data::ImageFile openFor(const LoadedModel& m, const std::string& path) {
  const data::ImageShape expected{m.config.model.image_size, m.config.model.image_size,
                                  m.config.model.in_channels};
  return data::ImageFile::open(path, m.config.data.dataset, &expected);
}

}  // namespace

int runEval(const CheckpointArgs& args, const comm::MpiSession& mpi) {
  const c10::Device device = selectDevice(DevicePreference::kAuto, mpi.world());
  LoadedModel m = loadModel(args.checkpoint, device);
  const data::ImageFile file = openFor(m, args.data);
  auto control = comm::makeControlCommunicator(mpi, {});
  CommStatsReducer reducer(*control, "evaluation");
  const ReconstructionMetrics r = evaluateVqVae(m.model, file, device, 256, reducer, args.n);
  if (!mpi.world().isRoot()) return kExitOk;
  JsonObject out = r.toJson();
  out.add("checkpoint", args.checkpoint).add("step", m.step).add("data", args.data);
  std::cout << out.str() << std::endl;
  if (!args.out.empty()) {
    std::ofstream f(args.out);
    f << out.str() << "\n";
    if (!f) throw Error("cannot write " + args.out);
  }
  return kExitOk;
}

int runReconstruct(const CheckpointArgs& args, const comm::MpiSession& mpi) {
  if (!mpi.world().isRoot()) return kExitOk;
  const c10::Device device = selectDevice(DevicePreference::kAuto, mpi.world());
  LoadedModel m = loadModel(args.checkpoint, device);
  const data::ImageFile file = openFor(m, args.data);
  const std::int64_t n = std::min<std::int64_t>(args.n > 0 ? args.n : 16, file.size());
  const data::ImageShape s = file.shape();
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(n * s.height * s.width * s.channels));
  file.readRange(0, n, raw.data());
  torch::NoGradGuard no_grad;
  const at::Tensor x =
      torch::from_blob(raw.data(), {n, s.height, s.width, s.channels}, torch::kUInt8)
          .permute({0, 3, 1, 2})
          .to(torch::kFloat)
          .div(127.5)
          .sub(1)
          .to(device);
  const at::Tensor recon = m.model->forward(x).reconstruction.clamp(-1, 1);
  // Rows of originals over rows of their reconstructions, `columns` images wide.
  const std::int64_t columns = std::min<std::int64_t>(n, 8);
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
  data::writeImageGrid(args.out, at::cat(rows).cpu(), static_cast<int>(columns));
  spdlog::info("wrote {} ({} images over their reconstructions, checkpoint step {})", args.out, n,
               m.step);
  return kExitOk;
}

}  // namespace tessera::trainer
