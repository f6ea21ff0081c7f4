// LPIPS, the learned perceptual image patch similarity of Zhang et al. 2018 ("The Unreasonable
// Effectiveness of Deep Features as a Perceptual Metric"), version 0.1 with a VGG16 trunk:
//
//   d(x, y) = sum over taps l of mean over positions (h, w) of
//             sum_c w_l[c] * (f_l(x)[c, h, w] / |f_l(x)[:, h, w]| - f_l(y)[c, h, w] / |f_l(y)[:, h,
//             w]|)^2
//
// where x, y are images in [-1, 1], first scaled per channel to (x - shift) / scale with
// shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450); f_l are the VGG16 activations
// after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (64, 128, 256, 512, 512 channels; 2x2 max
// pooling between the blocks); |v| is the channel-wise Euclidean norm plus 1e-10; w_l >= 0 are the
// learned linear heads (1x1 convolutions without bias).
//
// The weights come from a file the user gives, written by launch/convert_lpips_weights.py from
// torchvision's VGG16 and the public LPIPS v0.1 linear heads: safetensors (models/
// safetensors_reader.h) with __metadata__ "format" = "tessera-lpips-vgg16" and float32 tensors
//   trunk.conv{b}_{i}.weight [out, in, 3, 3], trunk.conv{b}_{i}.bias [out]   (13 convolutions)
//   lin{l}.weight [1, C_l, 1, 1]                                             (l = 0..4)
// Nothing is trained: every parameter has requires_grad false, the module is in eval mode; the
// gradient with respect to the images flows (a perceptual loss).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::models {

// The file format's metadata value.
inline constexpr const char* kLpipsFormat = "tessera-lpips-vgg16";

// VGG16's convolutional trunk up to relu5_3; submodules conv1_1 .. conv5_3.
class Vgg16FeaturesImpl : public torch::nn::Module {
 public:
  Vgg16FeaturesImpl();
  // The five taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) of images already scaled.
  std::vector<at::Tensor> forward(const at::Tensor& x);

  static const std::vector<std::int64_t>& tapChannels();  // {64, 128, 256, 512, 512}

 private:
  std::vector<std::vector<torch::nn::Conv2d>> blocks_;
};
TORCH_MODULE(Vgg16Features);

class LpipsImpl : public torch::nn::Module {
 public:
  // The architecture with LibTorch's default (random) initialisation; see load().
  LpipsImpl();
  // The architecture with the weights of `path` (throws InputError when the file is not an LPIPS
  // weights file: wrong format, a tensor missing, unexpected or misshapen, a negative head).
  explicit LpipsImpl(const std::string& path);

  // Replaces every weight with the file's.
  void load(const std::string& path);

  // Distances [B] between images [B, C, H, W] in [-1, 1] (C = 3, or 1: gray repeated to RGB).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& y);

  // The scaled input of the trunk.
  at::Tensor scale(const at::Tensor& images) const;

 private:
  void freeze();

  Vgg16Features trunk_{nullptr};
  std::vector<torch::nn::Conv2d> lins_;
};
TORCH_MODULE(Lpips);

}  // namespace tessera::models
