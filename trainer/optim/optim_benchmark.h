// The measurement behind `tessera bench optim`: what the optimizer's side of a step costs on a
// model with hundreds of parameter tensors, per-tensor reference against multi-tensor updates.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

#include "core/json.h"

namespace tessera::trainer {

// Parameter shapes of the ddpm-cifar10 UNet of docs/benchmarks.md with `base_channels` base
// channels, in module order: 328 tensors; 35,746,307 parameters at 128, 8,952,067 at 64.
std::vector<std::vector<std::int64_t>> ddpmUnetParameterShapes(std::int64_t base_channels);

struct OptimBenchOptions {
  std::int64_t base_channels = 64;
  c10::Device device = c10::Device(c10::kCPU);
  int rounds = 5;  // rounds of each path, alternating (the first path alternates too)
  int steps = 5;   // timed steps per path and round
  int warmup = 2;  // untimed steps of each path before the first round
  std::uint64_t seed = 0;
};

// One step: global gradient norm, clipping to 1.0 (always active here: the synthetic gradients'
// norm is far above it), Adam (lr 2e-4, as ddpm-cifar10) and one weight EMA (0.9999); the
// per-tensor reference (UpdateKernel::kPerTensor and reference::) against the default path
// (UpdateKernel::kAuto, globalNorm, clipByGlobalNorm), each on its own copy of the same
// parameters and gradients. Gradients are reset before each step, outside the clock; device
// work is finished before the clock is read. Keys: bench, model, base_channels, tensors, params,
// device, threads, kernel, rounds, steps_per_round, reference_ms and multi_tensor_ms (median
// over rounds of the mean step time), speedup (reference_ms / multi_tensor_ms),
// speedup_median_of_rounds, the per-round times, per-component medians (CPU only: the
// components are timed inside the step, which needs no device synchronisation there) and
// max_param_diff (the two copies' largest parameter difference relative to the tensor's scale,
// at the end).
JsonObject benchmarkOptimizerStep(const OptimBenchOptions& options);

}  // namespace tessera::trainer
