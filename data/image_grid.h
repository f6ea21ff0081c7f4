// PNG grids of images for samples and reconstructions.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace tessera::data {

// Writes `images` [N, C, H, W] (C = 1 or 3; any device and floating dtype; values in [-1, 1],
// clamped) as one PNG, `columns` images wide, with 2 px of black padding around and between
// images. Throws Error naming `path` when the tensor's shape is unusable or the file cannot be
// written.
void writeImageGrid(const std::string& path, const at::Tensor& images, int columns);

}  // namespace tessera::data
