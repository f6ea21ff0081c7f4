#include "trainer/device.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <algorithm>
#include <thread>

#include "core/error.h"
#include "tessera/config.h"

#if TESSERA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace tessera::trainer {

c10::Device selectDevice(DevicePreference preference, const comm::World& world) {
  if (preference == DevicePreference::kCpu) return c10::Device(c10::kCPU);
  const int count = TESSERA_WITH_CUDA ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (count == 0) {
    if (preference == DevicePreference::kCuda) {
      throw NotAvailable(TESSERA_WITH_CUDA
                             ? "run.device is cuda but no CUDA device is visible"
                             : "run.device is cuda but this build has no CUDA support "
                               "(configure with -DTESSERA_CUDA=ON against a CUDA LibTorch)");
    }
    return c10::Device(c10::kCPU);
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(comm::deviceIndexFor(world, count)));
}

std::vector<std::string> cudaDeviceNames() {
  std::vector<std::string> names;
#if TESSERA_WITH_CUDA
  const int count = static_cast<int>(torch::cuda::device_count());
  for (int i = 0; i < count; ++i) names.emplace_back(at::cuda::getDeviceProperties(i)->name);
#endif
  return names;
}

std::int64_t deviceMemoryInUse(c10::Device device) {
#if TESSERA_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDAGuard guard(device);
    std::size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
      return static_cast<std::int64_t>(total - free);
    }
  }
#endif
  return -1;
}

int intraOpThreads(int configured, const comm::World& world) {
  if (configured > 0) return configured;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, world.local_size));
}

}  // namespace tessera::trainer
