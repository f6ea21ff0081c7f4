// `tessera bench optim`: the optimizer's side of a step (global gradient norm, clipping, Adam,
// weight EMA) on the parameter shapes of the ddpm-cifar10 UNet at 64 and 128 base channels,
// per-tensor reference against multi-tensor updates (trainer/optim/optim_benchmark.h). Every
// rank measures its own copy; rank 0 prints.
#include <ATen/Parallel.h>

#include "comm/mpi_session.h"
#include "trainer/bench_commands.h"
#include "trainer/device.h"
#include "trainer/optim/optim_benchmark.h"

namespace tessera::trainer {

std::vector<JsonObject> benchOptim(const TrainConfig& c, const BenchArgs& args,
                                   const comm::MpiSession& mpi) {
  const comm::World& w = mpi.world();
  OptimBenchOptions o;
  o.device = selectDevice(c.run.device, w);
  at::set_num_threads(intraOpThreads(c.run.threads, w));
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  if (args.steps > 0) o.steps = static_cast<int>(args.steps);
  if (args.warmup >= 0) o.warmup = static_cast<int>(args.warmup);
  std::vector<JsonObject> lines;
  for (const std::int64_t channels : {64, 128}) {
    o.base_channels = channels;
    lines.push_back(benchmarkOptimizerStep(o));
  }
  return lines;
}

}  // namespace tessera::trainer
