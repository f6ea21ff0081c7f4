// The `tessera bench` kinds beyond `train` (trainer/commands/bench*.cpp).
#pragma once

#include <vector>

#include "core/json.h"
#include "trainer/cli.h"
#include "trainer/train_config.h"

namespace tessera::trainer {

// Reducer bandwidth vs raw MPI_Allreduce of the same bytes, and the share of gradient
// communication hidden behind backward, on the configured model.
std::vector<JsonObject> benchAllreduce(const TrainConfig& config, const BenchArgs& args,
                                       const comm::MpiSession& mpi);

// Loader throughput vs a raw sequential read of the same bytes, on data.train.
std::vector<JsonObject> benchData(const TrainConfig& config, const BenchArgs& args,
                                  const comm::MpiSession& mpi);

// Gradient norm, clipping, Adam and weight EMA per step on a UNet's parameter shapes (328
// tensors): per-tensor reference vs multi-tensor updates, alternating rounds.
std::vector<JsonObject> benchOptim(const TrainConfig& config, const BenchArgs& args,
                                   const comm::MpiSession& mpi);

}  // namespace tessera::trainer
