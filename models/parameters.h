// Counting and listing module parameters.
#pragma once

#include <cstdint>

namespace torch::nn {
class Module;
}

namespace tessera::models {

// Number of elements of all parameters that require a gradient (BENCH.md's `params`).
std::int64_t trainableParameterCount(const torch::nn::Module& module);

}  // namespace tessera::models
