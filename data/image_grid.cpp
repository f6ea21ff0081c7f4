#include "data/image_grid.h"

#include <stb_image_write.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "data/image_transform.h"

namespace tessera::data {

void writeImageGrid(const std::string& path, const at::Tensor& images, int columns) {
  constexpr std::int64_t kPad = 2;
  if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3) || images.size(0) == 0) {
    throw Error("cannot write image grid '" + path + "': expected images [N, 1 or 3, H, W], got " +
                std::to_string(images.dim()) + "-d tensor of " + std::to_string(images.numel()) +
                " elements");
  }
  if (columns <= 0) throw Error("cannot write image grid '" + path + "': columns must be > 0");
  const at::Tensor x = images.detach().to(at::kCPU, at::kFloat).contiguous();
  const std::int64_t n = x.size(0);
  const ImageShape shape{x.size(2), x.size(3), x.size(1)};
  const std::int64_t cols = std::min<std::int64_t>(columns, n);
  const std::int64_t rows = (n + cols - 1) / cols;
  const std::int64_t grid_w = cols * (shape.width + kPad) + kPad;
  const std::int64_t grid_h = rows * (shape.height + kPad) + kPad;
  const std::int64_t C = shape.channels;
  std::vector<std::uint8_t> grid(static_cast<std::size_t>(grid_w * grid_h * C), 0);
  std::vector<std::uint8_t> tile(static_cast<std::size_t>(shape.bytes()));
  const float* data = x.data_ptr<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    floatToImage(data + i * shape.bytes(), shape, tile.data());
    const std::int64_t top = kPad + (i / cols) * (shape.height + kPad);
    const std::int64_t left = kPad + (i % cols) * (shape.width + kPad);
    for (std::int64_t h = 0; h < shape.height; ++h) {
      std::copy_n(tile.data() + h * shape.width * C, shape.width * C,
                  grid.data() + ((top + h) * grid_w + left) * C);
    }
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
  }
  if (stbi_write_png(path.c_str(), static_cast<int>(grid_w), static_cast<int>(grid_h),
                     static_cast<int>(C), grid.data(), static_cast<int>(grid_w * C)) == 0) {
    throw Error("cannot write image grid '" + path + "' (directory missing or not writable?)");
  }
}

}  // namespace tessera::data
