#include "data/image_transform.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/where.h>

#include <algorithm>
#include <cmath>

// The conversion loops are compiled twice, for AVX2 and for the baseline, and the loader picks
// one per machine (GCC's function multi-versioning through ifunc): the AVX2 versions convert
// and de-interleave 2-4x faster, which is most of the loader's CPU time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define TESSERA_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TESSERA_SIMD_CLONES
#endif

namespace tessera::data {
namespace {

// Subtract, then multiply by the float nearest 1/127.5: within one ulp of (v - 127.5) / 127.5,
// exact at both ends (0 -> -1, 255 -> 1), and without the division that took a fifth of the
// conversion time.
constexpr float kInvHalfRange = 1.0f / 127.5f;
inline float toUnit(std::uint8_t v) {
  return (static_cast<float>(v) - 127.5f) * kInvHalfRange;
}

TESSERA_SIMD_CLONES
void grayPlane(const std::uint8_t* __restrict hwc, std::int64_t n, float* __restrict chw) {
  for (std::int64_t i = 0; i < n; ++i) chw[i] = toUnit(hwc[i]);
}

// One pass over the pixels, writing the three planes side by side.
TESSERA_SIMD_CLONES
void rgbPlanes(const std::uint8_t* __restrict hwc, std::int64_t plane, float* __restrict chw) {
  float* __restrict r = chw;
  float* __restrict g = chw + plane;
  float* __restrict b = chw + 2 * plane;
  for (std::int64_t i = 0; i < plane; ++i) {
    r[i] = toUnit(hwc[3 * i]);
    g[i] = toUnit(hwc[3 * i + 1]);
    b[i] = toUnit(hwc[3 * i + 2]);
  }
}

// Mirroring after conversion keeps the conversion loops contiguous (and vectorised); reversing
// rows that are still in cache is cheap.
TESSERA_SIMD_CLONES
void mirrorRows(float* __restrict data, std::int64_t rows, std::int64_t W) {
  for (std::int64_t r = 0; r < rows; ++r) std::reverse(data + r * W, data + (r + 1) * W);
}

}  // namespace

void imageToFloat(const std::uint8_t* hwc, const ImageShape& shape, bool hflip, float* chw) {
  const std::int64_t H = shape.height, W = shape.width, C = shape.channels;
  const std::int64_t plane = H * W;
  if (C == 1) {
    grayPlane(hwc, plane, chw);
  } else if (C == 3) {
    rgbPlanes(hwc, plane, chw);
  } else {
    for (std::int64_t c = 0; c < C; ++c) {
      for (std::int64_t i = 0; i < plane; ++i) chw[c * plane + i] = toUnit(hwc[i * C + c]);
    }
  }
  if (hflip) mirrorRows(chw, C * H, W);
}

at::Tensor modelInput(const at::Tensor& images, const at::Tensor& flips) {
  if (images.scalar_type() != at::kByte) return images;
  TORCH_CHECK(images.dim() == 4, "modelInput: expected NHWC uint8 images, got ", images.dim(),
              " dimensions");
  at::Tensor x = images;
  if (flips.defined()) {
    const at::Tensor mask = flips.to(images.device(), at::kBool).view({-1, 1, 1, 1});
    x = at::where(mask, x.flip({2}), x);
  }
  // Into a fresh NCHW tensor, not permute().contiguous(): with one channel the permuted view
  // already counts as contiguous (and as channels-last), and convolutions would take their
  // channels-last kernels, rounding differently from float batches.
  at::Tensor out =
      at::empty({x.size(0), x.size(3), x.size(1), x.size(2)}, x.options().dtype(at::kFloat));
  out.copy_(x.permute({0, 3, 1, 2}));
  // Two float operations in the order imageToFloat() uses: the results are bitwise equal.
  return out.sub_(127.5).mul_(kInvHalfRange);
}

void floatToImage(const float* chw, const ImageShape& shape, std::uint8_t* hwc) {
  const std::int64_t plane = shape.height * shape.width, C = shape.channels;
  for (std::int64_t c = 0; c < C; ++c) {
    for (std::int64_t i = 0; i < plane; ++i) {
      float v = chw[c * plane + i];
      v = std::isnan(v) ? 0.f : std::clamp(v, -1.f, 1.f);
      hwc[i * C + c] = static_cast<std::uint8_t>(std::lround((v + 1.f) * 127.5f));
    }
  }
}

at::Tensor floatToImages(const at::Tensor& images) {
  const at::Tensor f = images.to(at::kCPU, at::kFloat).contiguous();
  const ImageShape shape{f.size(2), f.size(3), f.size(1)};
  at::Tensor out = at::empty({f.size(0), shape.height, shape.width, shape.channels},
                             at::TensorOptions().dtype(at::kByte));
  const std::int64_t per = shape.bytes();
  for (std::int64_t i = 0; i < f.size(0); ++i) {
    floatToImage(f.data_ptr<float>() + i * per, shape, out.data_ptr<std::uint8_t>() + i * per);
  }
  return out;
}

}  // namespace tessera::data
