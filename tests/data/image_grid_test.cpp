// PNG grids: layout, padding, value mapping and write errors.
#include <gtest/gtest.h>
#include <stb_image.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <fstream>
#include <memory>

#include "core/error.h"
#include "data/image_grid.h"
#include "tests/data/data_test_support.h"

namespace tessera::data {
namespace {

at::Tensor ramp(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  at::Tensor t = at::empty({n, c, h, w}, at::TensorOptions().dtype(at::kFloat));
  float* p = t.data_ptr<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(i % 5) * 0.5f - 1.f;
  return t;
}

TEST(ImageGrid, LaysOutImagesWithPadding) {
  testing::ScratchDir dir;
  const at::Tensor images = ramp(5, 3, 4, 6);
  const std::string path = dir.file("sub/grid.png");
  writeImageGrid(path, images, 2);
  int w = 0, h = 0, c = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> png(stbi_load(path.c_str(), &w, &h, &c, 0),
                                                stbi_image_free);
  ASSERT_TRUE(png);
  EXPECT_EQ(w, 2 * (6 + 2) + 2);
  EXPECT_EQ(h, 3 * (4 + 2) + 2);
  EXPECT_EQ(c, 3);
  const float* src = images.data_ptr<float>();
  auto expect_pixel = [&](int image, int y, int x, int ch) {
    const int top = 2 + (image / 2) * 6, left = 2 + (image % 2) * 8;
    const float v = src[((image * 3 + ch) * 4 + y) * 6 + x];
    const int want = static_cast<int>(std::lround((v + 1.f) * 127.5f));
    EXPECT_EQ(png.get()[((top + y) * w + left + x) * 3 + ch], want);
  };
  for (int image : {0, 1, 4}) {
    for (int y : {0, 3}) {
      for (int x : {0, 5}) {
        for (int ch = 0; ch < 3; ++ch) expect_pixel(image, y, x, ch);
      }
    }
  }
  EXPECT_EQ(png.get()[0], 0);                              // padding
  EXPECT_EQ(png.get()[((2 + 2 * 6) * w + 2 + 8) * 3], 0);  // the empty sixth cell
}

TEST(ImageGrid, GrayAndClamped) {
  testing::ScratchDir dir;
  at::Tensor images = at::empty({1, 1, 2, 2}, at::TensorOptions().dtype(at::kFloat));
  float* p = images.data_ptr<float>();
  p[0] = -3.f, p[1] = 2.f, p[2] = 0.f, p[3] = -1.f;
  writeImageGrid(dir.file("g.png"), images, 8);
  int w = 0, h = 0, c = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> png(stbi_load(dir.file("g.png").c_str(), &w, &h, &c, 0),
                                                stbi_image_free);
  ASSERT_TRUE(png);
  EXPECT_EQ(c, 1);
  EXPECT_EQ(w, 6);
  EXPECT_EQ(png.get()[2 * w + 2], 0);
  EXPECT_EQ(png.get()[2 * w + 3], 255);
  EXPECT_EQ(png.get()[3 * w + 2], 128);
}

TEST(ImageGrid, ErrorsNameThePath) {
  testing::ScratchDir dir;
  std::ofstream(dir.file("file")) << "x";
  try {
    writeImageGrid(dir.file("file/grid.png"), ramp(1, 1, 2, 2), 1);
    ADD_FAILURE() << "wrote below a regular file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("file/grid.png"), std::string::npos) << e.what();
  }
  EXPECT_THROW(writeImageGrid(dir.file("a.png"), ramp(1, 2, 2, 2), 1), Error);
  EXPECT_THROW(writeImageGrid(dir.file("a.png"), ramp(1, 1, 2, 2), 0), Error);
}

}  // namespace
}  // namespace tessera::data
