// Counting and listing module parameters.
#pragma once

#include <cstdint>

namespace torch::nn {
class Module;
}

namespace tessera::models {

// Number of elements of all parameters that require a gradient (the `params` of
// docs/benchmarks.md).
std::int64_t trainableParameterCount(const torch::nn::Module& module);

}  // namespace tessera::models
