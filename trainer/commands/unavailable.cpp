// Subcommands whose capability has not landed yet: a clear error and exit code 4, never a
// silent no-op.
#include "core/error.h"
#include "trainer/cli.h"
#include "trainer/train_config.h"

#include <iostream>

namespace tessera::trainer {

int runSample(const SampleArgs&, const comm::MpiSession&) {
  throw NotAvailable(
      "`tessera sample` needs a diffusion model; diffusion is not available in "
      "this version yet");
}

}  // namespace tessera::trainer

namespace tessera::trainer {

int runTrain(const TrainArgs& args, const comm::MpiSession&) {
  const TrainConfig config = loadTrainConfig(args.config, args.overrides);
  if (args.print_config) {
    std::cout << toYaml(config);
    return kExitOk;
  }
  throw NotAvailable("`tessera train` is not available in this version yet");
}
int runBench(const BenchArgs&, const comm::MpiSession&) {
  throw NotAvailable("`tessera bench` is not available in this version yet");
}
int runConvert(const ConvertArgs&) {
  throw NotAvailable("`tessera convert` is not available in this version yet");
}
int runReconstruct(const CheckpointArgs&, const comm::MpiSession&) {
  throw NotAvailable("`tessera reconstruct` is not available in this version yet");
}
int runEval(const CheckpointArgs&, const comm::MpiSession&) {
  throw NotAvailable("`tessera eval` is not available in this version yet");
}
int runExport(const ExportArgs&) {
  throw NotAvailable("`tessera export` is not available in this version yet");
}

}  // namespace tessera::trainer
