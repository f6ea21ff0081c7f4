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
#include "trainer/sample_quality.h"

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

namespace {

void printJson(const JsonObject& out, const std::string& path) {
  std::cout << out.str() << std::endl;
  if (!path.empty()) {
    std::ofstream f(path);
    f << out.str() << "\n";
    if (!f) throw Error("cannot write " + path);
  }
}

int runSampleQuality(const EvalArgs& args, const comm::MpiSession& mpi) {
  if (!args.checkpoint.empty() || !args.data.empty()) {
    throw UsageError(
        "eval: --samples compares two image files; --checkpoint and --data are for "
        "evaluating a checkpoint");
  }
  if (args.reference.empty()) throw UsageError("eval --samples: --reference FILE is required");
  if (args.features.empty()) {
    throw UsageError("eval --samples: --features CHECKPOINT|inception:WEIGHTS is required");
  }
  const c10::Device device = selectDevice(DevicePreference::kAuto, mpi.world());
  auto control = comm::makeControlCommunicator(mpi, {});
  CommStatsReducer reducer(*control, "sample quality");
  SampleQualityArgs a;
  a.samples = args.samples;
  a.reference = args.reference;
  a.features = args.features;
  a.n = args.n;
  a.pr_images = args.pr_images;
  a.use_cache = !args.no_cache;
  const JsonObject out = evaluateSamples(a, reducer, device);
  if (mpi.world().isRoot()) printJson(out, args.out);
  return kExitOk;
}

}  // namespace

int runEval(const EvalArgs& args, const comm::MpiSession& mpi) {
  if (!args.samples.empty()) return runSampleQuality(args, mpi);
  if (args.checkpoint.empty() || args.data.empty()) {
    throw UsageError(
        "eval: give --checkpoint FILE --data FILE.h5, or --samples FILE --reference FILE "
        "--features CHECKPOINT|inception:WEIGHTS");
  }
  if (!args.reference.empty()) {
    throw UsageError("eval: --reference goes with --samples");
  }
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
  if (!args.features.empty()) {
    // The reconstructions' Fréchet distance (rFD) to the images they reconstruct.
    std::unique_ptr<FeatureNetwork> net = FeatureNetwork::open(args.features, device);
    const at::Tensor probe = m.task->reconstruct(readImages(file, 0, 1));
    if (!probe.defined()) {
      throw NotAvailable("eval --features: task '" + m.task->name() + "' of " + args.checkpoint +
                         " does not reconstruct images (use --samples for generated images)");
    }
    out.add("reconstruction_quality",
            reconstructionQuality(*net, file, args.n, args.pr_images, reducer, !args.no_cache,
                                  [&](const at::Tensor& x) { return m.task->reconstruct(x); }))
        .add("features", net->description());
  }
  if (!mpi.world().isRoot()) return kExitOk;
  out.add("checkpoint", args.checkpoint)
      .add("step", m.step)
      .add("data", args.data)
      .add("task", m.task->name())
      .add("weights", m.weights);
  printJson(out, args.out);
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
