// ConvTranspose2d(kernel 4, stride 2, padding 1) with the same parameters (weight [in, out, 4,
// 4], bias [out]), initialisation and function as torch::nn::ConvTranspose2d, computed one of two
// ways:
//  - kTransposed (default): LibTorch's transposed convolution. On the CPU it is im2col + GEMM
//    (`slow_conv_transpose2d`): fast with an optimised BLAS (OpenBLAS, which launch/install_deps.sh
//    installs), several times slower on the reference BLAS.
//  - kSubPixel: a 3x3 convolution into 4x the output channels followed by a pixel shuffle (the
//    sub-pixel form of the same linear map), on oneDNN. It multiplies 9 taps where 4 are non-zero
//    (2.25x the multiply-adds), which paid off only while LibTorch ran on the reference BLAS.
//    Output phase (a, b) of pixel (2m+a, 2n+b) reads input rows m-1..m+1 with kernel taps
//    {3, 1, -} for a = 0 and {-, 2, 0} for a = 1 (likewise columns).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace tessera::models {

enum class UpsampleMode { kTransposed, kSubPixel };

class UpsampleConvImpl : public torch::nn::Module {
 public:
  UpsampleConvImpl(std::int64_t in_channels, std::int64_t out_channels,
                   UpsampleMode mode = UpsampleMode::kTransposed);
  at::Tensor forward(const at::Tensor& x);

  // The equivalent 3x3 convolution's weight [4 * out, in, 3, 3] and bias [4 * out].
  at::Tensor convWeight() const;
  at::Tensor convBias() const;

 private:
  at::Tensor weight_;  // [in, out, 4, 4], as ConvTranspose2d
  at::Tensor bias_;    // [out]
  at::Tensor taps_;    // [2, 3]: kernel index per output phase and input offset (4 = zero tap)
  UpsampleMode mode_;
};
TORCH_MODULE(UpsampleConv);

}  // namespace tessera::models
