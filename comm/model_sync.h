// Start-of-training agreement between ranks: the same parameters everywhere, then rank 0's
// values everywhere.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"

namespace tessera::comm {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Checks that every rank holds the same parameters (count, names, shapes, dtypes, in order) with
// one small hash all-reduce; only when they differ, a second one finds the first differing
// parameter and a third gathers its description from every rank. Throws CommError on every rank,
// naming `what` and that parameter as each rank has it, e.g.
//   "vqvae: parameters differ between ranks at #3: rank 0 has 'enc.conv1.weight' Float [8, 1,
//   3, 3], rank 1 has 'enc.conv1.weight' Float [8, 1, 5, 5]".
// Collective on `comm`; every collective has the communicator's deadline, so a rank that never
// arrives makes the others fail, not hang.
void verifySameParameters(Communicator& comm, const NamedTensors& params, const std::string& what);

// Overwrites `tensors` (parameters and buffers, on comm.device()) with root's values, coalesced
// into a few flat broadcasts per dtype. Collective; every rank passes the same shapes.
void broadcastFromRoot(Communicator& comm, const std::vector<at::Tensor>& tensors, int root = 0);

}  // namespace tessera::comm
