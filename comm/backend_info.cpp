#include "comm/backend_info.h"

#include "tessera/config.h"

#if TESSERA_WITH_NCCL
#include <nccl.h>
#endif

namespace tessera::comm {

std::string ncclVersion() {
#if TESSERA_WITH_NCCL
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
#else
  return "not built";
#endif
}

}  // namespace tessera::comm
