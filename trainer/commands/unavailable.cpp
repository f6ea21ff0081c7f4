// Subcommands whose capability has not landed yet: a clear error and exit code 4, never a
// silent no-op.
#include "core/error.h"
#include "trainer/cli.h"

namespace tessera::trainer {

int runSample(const SampleArgs&, const comm::MpiSession&) {
  throw NotAvailable(
      "`tessera sample` needs a diffusion model; diffusion is not available in "
      "this version yet");
}

}  // namespace tessera::trainer
