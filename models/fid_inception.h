// The feature network of the Fréchet Inception Distance as pytorch-fid computes it: Inception v3
// with the TensorFlow graph's block variants (the weights of the 2015-12-05 TensorFlow release),
// cut after the last average pool, so each image becomes a 2048-d "pool3" feature vector.
//
// Compared with torchvision's Inception v3 the blocks differ only in their pooling branches:
// Mixed_5b..5d (A), Mixed_6b..6e (C) and Mixed_7b (E_1) average-pool 3x3 (stride 1, padding 1)
// WITHOUT counting the padding (count_include_pad false); Mixed_7c (E_2) max-pools there
// instead. Every convolution is BasicConv2d: convolution without bias, BatchNorm (eps 1e-3, with
// the running statistics) and ReLU.
//
// Input: pytorch-fid takes images in [0, 1], resizes them to 299x299 (bilinear, align_corners
// false, no antialiasing) and maps them to [-1, 1]. Tessera's images already are in [-1, 1];
// resizing commutes with the affine map, so features() resizes them directly.
//
// The weights come from a file the user gives, written by launch/convert_fid_inception_weights.py
// from pytorch-fid's public pt_inception-2015-12-05-*.pth: safetensors (models/
// safetensors_reader.h) with __metadata__ "format" = "tessera-fid-inception-v3" and one floating
// point tensor per parameter and BatchNorm statistic, named as in that state dict:
//   <block>.conv.weight [out, in, kh, kw], <block>.bn.{weight,bias,running_mean,running_var} [out]
// e.g. Conv2d_1a_3x3.conv.weight, Mixed_6b.branch7x7dbl_3.bn.running_var (94 convolutions, 470
// tensors; the classifier fc.* is not part of the file). Nothing is downloaded.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace tessera::models {

// The file format's metadata value.
inline constexpr const char* kFidInceptionFormat = "tessera-fid-inception-v3";
// Side of the square images the network sees, and the size of its features.
inline constexpr std::int64_t kFidInceptionSide = 299;
inline constexpr std::int64_t kFidInceptionFeatures = 2048;

class FidInception {
 public:
  // Reads the weights of `path` onto `device`. Throws InputError naming the file and the tensor
  // when the file is not an FID Inception weights file (wrong format metadata, a tensor missing,
  // unexpected, misshapen, not floating point, or a negative running variance).
  static FidInception load(const std::string& path, c10::Device device);

  // Pool features [N, 2048] float32 on the CPU of images [N, C, H, W] (any floating dtype and
  // device) with values in [-1, 1], C = 3 or 1 (gray, repeated to RGB), any H and W (resized to
  // 299x299 inside). Runs without autograd, in chunks of at most 50 images to bound memory; the
  // features of an image do not depend on the others in its batch. N may be 0.
  at::Tensor features(const at::Tensor& images);

  // 16 lowercase hex digits: a hash of the format and of every tensor's name, shape and float32
  // value, in name order. Equal weights give equal fingerprints on every platform, so cached
  // reference statistics can name the network that computed them.
  std::string fingerprint() const;

 private:
  struct Impl;
  explicit FidInception(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace tessera::models
