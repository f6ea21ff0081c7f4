// `tessera eval` and `tessera reconstruct` (`tessera sample`: commands/sample.cpp): the task a
// checkpoint names, asked through the Task interface; a task that cannot do something answers "not
// available" (exit 4).
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "comm/communicator.h"
#include "comm/local_communicator.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "data/image_file.h"
#include "trainer/cli.h"
#include "trainer/comm_stats_reducer.h"
#include "trainer/device.h"
#include "trainer/inference.h"

namespace tessera::trainer {
namespace {

data::ImageFile openFor(const LoadedTask& m, const std::string& path) {
  const data::ImageShape expected = modelImageShape(m.config);
  return data::ImageFile::open(path, m.config.data.dataset, &expected);
}

// A task loaded by one process alone: its reducers get a world of one.
LoadedTask loadAlone(const std::string& checkpoint, const std::string& weights,
                     c10::Device device) {
  return loadTask(checkpoint, parseWeightChoice(weights, "--weights"), device,
                  std::make_unique<comm::LocalCommunicator>(device));
}

}  // namespace

int runEval(const CheckpointArgs& args, const comm::MpiSession& mpi) {
  const c10::Device device = selectDevice(DevicePreference::kAuto, mpi.world());
  LoadedTask m = loadTask(args.checkpoint, parseWeightChoice(args.weights, "--weights"), device,
                          comm::makeCommunicator(mpi, device, {}));
  const data::ImageFile file = openFor(m, args.data);
  auto control = comm::makeControlCommunicator(mpi, {});
  CommStatsReducer reducer(*control, "evaluation");
  JsonObject out = m.task->evaluate(file, reducer, 256, args.n);
  if (out.empty()) {
    throw NotAvailable("task '" + m.task->name() + "' of " + args.checkpoint +
                       " has no evaluation");
  }
  if (!mpi.world().isRoot()) return kExitOk;
  out.add("checkpoint", args.checkpoint)
      .add("step", m.step)
      .add("data", args.data)
      .add("task", m.task->name())
      .add("weights", m.weights);
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
  LoadedTask m = loadAlone(args.checkpoint, args.weights, device);
  const data::ImageFile file = openFor(m, args.data);
  const at::Tensor x = readFirstImages(file, args.n > 0 ? args.n : 16);
  const std::int64_t n = x.size(0);
  const at::Tensor recon = m.task->reconstruct(x);
  if (!recon.defined()) {
    throw NotAvailable("task '" + m.task->name() + "' of " + args.checkpoint +
                       " does not reconstruct images");
  }
  writeReconstructionGrid(args.out, x, recon, 8);
  spdlog::info("wrote {} ({} images over their reconstructions, checkpoint step {}, {} weights)",
               args.out, n, m.step, m.weights);
  return kExitOk;
}

}  // namespace tessera::trainer
