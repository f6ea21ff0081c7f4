// Per-image conversions between the stored form (HWC uint8) and the model's (CHW float in
// [-1, 1]).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "data/image_shape.h"

namespace tessera::data {

// Writes `hwc` (shape.bytes() bytes) to `chw` (shape.bytes() floats) as
// (float(v) - 127.5f) * (1.0f / 127.5f), so 0 -> -1 and 255 -> 1 exactly; mirrored left-right
// when `hflip`.
void imageToFloat(const std::uint8_t* hwc, const ImageShape& shape, bool hflip, float* chw);

// What a model takes: float NCHW batches pass through; uint8 NHWC batches (LoaderOptions::Output::
// kUint8) are mirrored where `flips` (bool [B], Batch::flips) says and converted where they are,
// with the same arithmetic as imageToFloat(): bitwise the float batch.
at::Tensor modelInput(const at::Tensor& images, const at::Tensor& flips = at::Tensor());

// The inverse for display: CHW float (clamped to [-1, 1]) to HWC uint8, rounded.
void floatToImage(const float* chw, const ImageShape& shape, std::uint8_t* hwc);
// The same for a batch: [N, C, H, W] floats (any device and float type) -> [N, H, W, C] uint8
// on the CPU.
at::Tensor floatToImages(const at::Tensor& images);

}  // namespace tessera::data
