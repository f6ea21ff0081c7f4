// Progress through the data (docs/design.md, contract 3): an epoch and the number of samples of
// that epoch's global order consumed so far, summed over all ranks. It does not depend on the world
// size, so a run can resume on any number of ranks.
#pragma once

#include <cstdint>

namespace tessera::data {

struct DataPosition {
  std::int64_t epoch = 0;
  std::int64_t consumed = 0;  // global samples consumed in `epoch`

  bool operator==(const DataPosition& o) const {
    return epoch == o.epoch && consumed == o.consumed;
  }
  bool operator!=(const DataPosition& o) const { return !(*this == o); }
};

}  // namespace tessera::data
