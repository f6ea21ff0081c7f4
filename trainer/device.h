// Which device a rank trains on, and how many intra-op threads it uses.
#pragma once

#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "comm/world.h"
#include "trainer/train_config.h"

namespace tessera::trainer {

// auto: CUDA device local_rank % count when this build has CUDA and a device is visible, else
// CPU. cuda: as auto, but NotAvailable when there is no CUDA device.
c10::Device selectDevice(DevicePreference preference, const comm::World& world);

// Names of the visible CUDA devices (empty in a CPU build).
std::vector<std::string> cudaDeviceNames();

// Bytes of device memory in use on a CUDA device (cudaMemGetInfo: total - free, every process on
// it); -1 for other devices and in CPU builds.
std::int64_t deviceMemoryInUse(c10::Device device);

// Threads for intra-op parallelism: `configured` if > 0, else cores / ranks on this node.
int intraOpThreads(int configured, const comm::World& world);

}  // namespace tessera::trainer
