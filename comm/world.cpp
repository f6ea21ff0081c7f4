#include "comm/world.h"

#include <c10/util/Exception.h>

namespace tessera::comm {

int deviceIndexFor(const World& world, int device_count) {
  TORCH_CHECK(device_count > 0, "deviceIndexFor: no devices");
  return world.local_rank % device_count;
}

}  // namespace tessera::comm
