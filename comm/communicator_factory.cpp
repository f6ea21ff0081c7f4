// The one place where a backend is chosen (STYLE.md 4).
#include <spdlog/spdlog.h>

#include <set>

#include "comm/communicator.h"
#include "comm/gather_strings.h"
#include "comm/local_communicator.h"
#include "comm/mpi_communicator.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "tessera/config.h"

#if TESSERA_WITH_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace tessera::comm {
namespace {

#if TESSERA_WITH_NCCL
// NCCL needs one GPU per rank: several ranks on one device is unsupported and may hang. The
// answer is computed from data every rank gathers, so every rank takes the same decision.
std::string ncclUnusableReason(Communicator& control, const World& world, c10::Device device) {
  const std::string mine = world.hostname + "/" + ncclDeviceIdentity(device);
  const std::vector<std::string> all = gatherStrings(control, mine, "GPU identities");
  std::set<std::string> seen;
  for (size_t r = 0; r < all.size(); ++r) {
    if (!seen.insert(all[r]).second) {
      return "several ranks share GPU " + all[r] + " (rank " + std::to_string(r) + " and another)";
    }
  }
  return {};
}
#endif

std::unique_ptr<Communicator> makeMpiOrLocal(const World& world, c10::Device device,
                                             const CommOptions& options) {
  if (options.timeout.count() <= 0) {
    throw UsageError("communication timeout must be positive, got " +
                     std::to_string(options.timeout.count()) + " ms");
  }
  const bool want_mpi = options.backend == CommBackend::kMpi ? world.mpi : world.size > 1;
  if (!want_mpi) return std::make_unique<LocalCommunicator>(device);
  return std::make_unique<MpiCommunicator>(world, device, options);
}

}  // namespace

std::unique_ptr<Communicator> makeControlCommunicator(const MpiSession& mpi,
                                                      const CommOptions& options) {
  const World& world = mpi.world();
  if (world.size > 1 && !world.mpi) throw Error("a world of several ranks without MPI");
  return makeMpiOrLocal(world, c10::Device(c10::kCPU), options);
}

std::unique_ptr<Communicator> makeCommunicator(const MpiSession& mpi, c10::Device device,
                                               const CommOptions& options) {
  const World& world = mpi.world();
  if (!device.is_cpu() && !device.is_cuda()) {
    throw NotAvailable("no communicator for device " + device.str());
  }
  if (options.backend == CommBackend::kNccl && !device.is_cuda()) {
    throw UsageError("the NCCL backend needs a CUDA device, not " + device.str());
  }
  const bool try_nccl =
      device.is_cuda() && (options.backend == CommBackend::kNccl ||
                           (options.backend == CommBackend::kAuto && world.size > 1));
  if (try_nccl) {
#if TESSERA_WITH_NCCL
    auto control = makeMpiOrLocal(world, c10::Device(c10::kCPU), options);
    const std::string reason = ncclUnusableReason(*control, world, device);
    if (reason.empty()) {
      return std::make_unique<NcclCommunicator>(*control, device, options);
    }
    if (options.backend == CommBackend::kNccl) throw UsageError("NCCL is not usable: " + reason);
    if (world.rank == 0) {
      spdlog::warn("NCCL is not usable ({}); gradients go through MPI with host staging", reason);
    }
#else
    if (options.backend == CommBackend::kNccl) {
      throw NotAvailable("this build of Tessera has no NCCL backend (built without CUDA/NCCL)");
    }
    if (world.rank == 0) {
      spdlog::warn("this build has no NCCL; CUDA gradients go through MPI with host staging");
    }
#endif
  }
  return makeMpiOrLocal(world, device, options);
}

}  // namespace tessera::comm
