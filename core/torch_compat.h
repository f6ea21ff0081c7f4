// The few places where Debian's LibTorch 1.13 (CPU) and PyTorch 2.x's LibTorch (CUDA) differ.
// Include only from .cpp files: it may pull in CUDA headers in the CUDA build.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <c10/core/Device.h>
#include <torch/version.h>

#include <cstdint>

#include "tessera/config.h"

#if TESSERA_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#define TESSERA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||          \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace tessera::compat {

inline at::Generator makeGenerator(std::uint64_t seed, c10::Device device) {
#if TESSERA_WITH_CUDA
  if (device.is_cuda()) {
    at::Generator gen = at::cuda::detail::createCUDAGenerator(device.index());
    gen.set_current_seed(seed);
    return gen;
  }
#endif
  TORCH_CHECK(device.is_cpu(), "no keyed generator for device ", device.str());
  return at::detail::createCPUGenerator(seed);
}

}  // namespace tessera::compat
