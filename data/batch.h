// One rank's share of one training step, as the loader hands it over.
#pragma once

#include <ATen/core/Tensor.h>

#include "data/data_position.h"

namespace tessera::data {

struct Batch {
  at::Tensor images;      // float32 [B, C, H, W] in [-1, 1], CPU (pinned when asked and built)
  at::Tensor labels;      // int64 [B]; undefined when the file has no labels
  at::Tensor indices;     // int64 [B] dataset indices, in the sampler's order
  DataPosition position;  // where this step starts (normalised: never a spent epoch)
  DataPosition next;      // where the next step starts
};

}  // namespace tessera::data
