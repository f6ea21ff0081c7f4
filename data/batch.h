// One rank's share of one training step, as the loader hands it over.
#pragma once

#include <ATen/core/Tensor.h>

#include "data/data_position.h"

namespace tessera::data {

struct Batch {
  // float32 [B, C, H, W] in [-1, 1], or with LoaderOptions::Output::kUint8 the stored uint8
  // [B, H, W, C] (data::modelInput() converts); CPU, pinned when asked and built with CUDA.
  // The loader never writes these bytes again while a reference to them (the tensor, an alias
  // or a view) is alive, nor, when pinned, before every non-blocking copy out of them has
  // completed: dropping the batch right after `images.to(cuda, non_blocking)` is safe.
  at::Tensor images;
  at::Tensor flips;       // bool [B] with kUint8 output: images modelInput() still mirrors
  at::Tensor labels;      // int64 [B]; undefined when the file has no labels
  at::Tensor indices;     // int64 [B] dataset indices, in the sampler's order
  DataPosition position;  // where this step starts (normalised: never a spent epoch)
  DataPosition next;      // where the next step starts
};

}  // namespace tessera::data
