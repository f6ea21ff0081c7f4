// `tessera train`: resolve the configuration, then run the training loop.
#include <spdlog/spdlog.h>

#include <iostream>

#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/logging.h"
#include "trainer/cli.h"
#include "trainer/trainer.h"

namespace tessera::trainer {

int runTrain(const TrainArgs& args, const comm::MpiSession& mpi) {
  TrainerOptions options;
  options.config = loadTrainConfig(args.config, args.overrides);
  if (args.print_config) {
    if (mpi.world().isRoot()) std::cout << toYaml(options.config);
    return kExitOk;
  }
  initLogging(mpi.world().rank, {options.config.log.level, options.config.log.all_ranks});
  if (options.config.data.train.empty()) {
    throw ConfigError(args.config +
                      ": data.train is not set (an HDF5 file made by `tessera convert`)");
  }
  options.run_dir = args.run_dir.empty() ? "runs/" + options.config.run.name : args.run_dir;
  options.resume = args.resume;
  options.no_resume = args.no_resume;
  const TrainingSummary summary = train(options, mpi);
  spdlog::info("done: {} steps in {:.1f} s ({} skipped)", summary.steps, summary.seconds,
               summary.skipped_steps);
  return kExitOk;
}

}  // namespace tessera::trainer
