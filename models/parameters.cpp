#include "models/parameters.h"

#include <torch/nn/module.h>

namespace tessera::models {

std::int64_t trainableParameterCount(const torch::nn::Module& module) {
  std::int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) {
    if (p.requires_grad()) n += p.numel();
  }
  return n;
}

}  // namespace tessera::models
