// Small control-plane agreements on strings.
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"

namespace tessera::comm {

// Every rank passes a string and receives all of them in rank order. Collective on `comm`
// (tensors travel on comm.device()).
std::vector<std::string> gatherStrings(Communicator& comm, const std::string& mine,
                                       const std::string& what);

}  // namespace tessera::comm
