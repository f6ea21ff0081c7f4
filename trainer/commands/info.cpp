// `tessera info`: versions, backends, devices and the MPI world as every rank sees it.
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <iostream>

#include "comm/backend_info.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/json.h"
#include "data/hdf5_library.h"
#include "tessera/config.h"
#include "trainer/blas_info.h"
#include "trainer/cli.h"
#include "trainer/device.h"

namespace tessera::trainer {

int runInfo(const InfoArgs& args, const comm::MpiSession& mpi) {
  const comm::World& w = mpi.world();
  const int threads = intraOpThreads(0, w);
  const c10::Device device = selectDevice(DevicePreference::kAuto, w);
  JsonObject mine;
  mine.add("rank", w.rank)
      .add("size", w.size)
      .add("local_rank", w.local_rank)
      .add("local_size", w.local_size)
      .add("host", w.hostname)
      .add("device", device.str())
      .add("threads", threads);
  const auto all = mpi.allGatherStrings(mine.str());
  if (!w.isRoot()) return kExitOk;

  const auto gpus = cudaDeviceNames();
  const BlasInfo blas = blasInfo();
  if (const std::string warning = blasWarning(blas); !warning.empty()) {
    std::cerr << "warning: " << warning << std::endl;
  }
  const std::string mpi_version = w.mpi ? comm::MpiSession::libraryVersion() : "not launched";
  if (args.json) {
    std::vector<JsonObject> gpu_list;
    for (const auto& g : gpus) gpu_list.push_back(JsonObject().add("name", g));
    std::string ranks = "[";
    for (std::size_t i = 0; i < all.size(); ++i) ranks += (i ? ", " : "") + all[i];
    ranks += "]";
    JsonObject out;
    out.add("tessera", TESSERA_VERSION)
        .add("libtorch", TORCH_VERSION)
        .add("cuda_built", bool(TESSERA_WITH_CUDA))
        .add("nccl", comm::ncclVersion())
        .add("mpi", mpi_version)
        .add("hdf5", data::hdf5Version())
        .add("blas", blas.name)
        .add("blas_library", blas.library)
        .add("prometheus", bool(TESSERA_HAVE_PROMETHEUS))
        .add("gpus", gpu_list);
    std::string text = out.str();
    text.insert(text.size() - 1, ", \"world\": " + ranks);
    std::cout << text << std::endl;
    return kExitOk;
  }
  std::cout << "tessera " << TESSERA_VERSION << "\n"
            << "  LibTorch    " << TORCH_VERSION << " ("
            << (TESSERA_WITH_CUDA ? "CUDA" : "CPU only") << ")\n"
            << "  CUDA        "
            << (TESSERA_WITH_CUDA ? std::to_string(gpus.size()) + " device(s)" : "not built")
            << "\n";
  for (std::size_t i = 0; i < gpus.size(); ++i) {
    std::cout << "    cuda:" << i << "    " << gpus[i] << "\n";
  }
  std::cout << "  NCCL        " << comm::ncclVersion() << "\n"
            << "  MPI         " << mpi_version << "\n"
            << "  HDF5        " << data::hdf5Version() << "\n"
            << "  BLAS        " << blas.name
            << (blas.library.empty() ? "" : " (" + blas.library + ")")
            << (blas.detail.empty() ? "" : ", " + blas.detail) << "\n"
            << "  Prometheus  " << (TESSERA_HAVE_PROMETHEUS ? "prometheus-cpp" : "not built")
            << "\n"
            << "world: " << w.size << " rank(s)" << (w.mpi ? "" : " (no MPI launcher)") << "\n";
  for (const auto& line : all) std::cout << "  " << line << "\n";
  std::cout.flush();
  return kExitOk;
}

}  // namespace tessera::trainer
