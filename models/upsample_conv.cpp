#include "models/upsample_conv.h"

#include <torch/torch.h>

namespace tessera::models {

UpsampleConvImpl::UpsampleConvImpl(std::int64_t in_channels, std::int64_t out_channels,
                                   UpsampleMode mode)
    : mode_(mode) {
  // Draw the initial values exactly as torch::nn::ConvTranspose2d does (same generator calls).
  torch::nn::ConvTranspose2d reference(
      torch::nn::ConvTranspose2dOptions(in_channels, out_channels, 4).stride(2).padding(1));
  weight_ = register_parameter("weight", reference->weight.detach().clone());
  bias_ = register_parameter("bias", reference->bias.detach().clone());
  taps_ = torch::tensor({{3, 1, 4}, {4, 2, 0}}, torch::kLong);
}

at::Tensor UpsampleConvImpl::convWeight() const {
  const std::int64_t in = weight_.size(0), out = weight_.size(1);
  const at::Tensor taps = taps_.to(weight_.device());
  // Index 4 of the padded kernel is a zero tap.
  const at::Tensor padded = torch::constant_pad_nd(weight_, {0, 1, 0, 1});  // [in, out, 5, 5]
  std::vector<at::Tensor> phases;
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      phases.push_back(padded.index_select(2, taps[a]).index_select(3, taps[b]));  // [in,out,3,3]
    }
  }
  // Channel order of pixel_shuffle: out_channel * 4 + a * 2 + b.
  return torch::stack(phases, 2).permute({1, 2, 0, 3, 4}).reshape({out * 4, in, 3, 3});
}

at::Tensor UpsampleConvImpl::convBias() const {
  return bias_.repeat_interleave(4);
}

at::Tensor UpsampleConvImpl::forward(const at::Tensor& x) {
  if (mode_ == UpsampleMode::kTransposed) {
    return torch::conv_transpose2d(x, weight_, bias_, /*stride=*/2, /*padding=*/1);
  }
  const at::Tensor y = torch::conv2d(x, convWeight(), convBias(), /*stride=*/1, /*padding=*/1);
  return torch::pixel_shuffle(y, 2);
}

}  // namespace tessera::models
