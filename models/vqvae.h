// The VQ-VAE family of van den Oord et al. 2017: a convolutional encoder with `downsample`
// stride-2 stages and residual blocks, an EMA vector quantizer, and a mirrored decoder.
// With the defaults it is `vqvae-fmnist` of docs/benchmarks.md (658,625 trainable
// parameters).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include "models/vector_quantizer.h"

namespace tessera::models {

struct VqVaeOptions {
  std::int64_t in_channels = 1;
  std::int64_t hidden = 128;     // trunk channels; the outer stride-2 stages use hidden / 2
  std::int64_t res_hidden = 32;  // channels inside residual blocks
  std::int64_t res_blocks = 2;
  std::int64_t downsample = 2;  // stride-2 stages: latent grid = image / 2^downsample
  VectorQuantizerOptions quantizer;
};

// x + Conv1x1(ReLU(Conv3x3(ReLU(x))))
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(std::int64_t channels, std::int64_t hidden);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Sequential body_{nullptr};
};
TORCH_MODULE(ResidualBlock);

struct VqVaeOutput {
  at::Tensor reconstruction;  // [B, C, H, W]
  at::Tensor commitment;      // scalar, beta included
  at::Tensor codes;           // int64 [B, h, w]
  at::Tensor latents;         // z_e [B, D, h, w]
};

class VqVaeImpl : public torch::nn::Module {
 public:
  explicit VqVaeImpl(const VqVaeOptions& options);

  VqVaeOutput forward(const at::Tensor& images);
  at::Tensor encode(const at::Tensor& images);
  at::Tensor decode(const at::Tensor& quantized);
  // Reconstruction from code indices [B, h, w].
  at::Tensor decodeCodes(const at::Tensor& codes);

  VectorQuantizer& quantizer() { return quantizer_; }
  const VectorQuantizer& quantizer() const { return quantizer_; }
  const VqVaeOptions& options() const { return options_; }

 private:
  VqVaeOptions options_;
  torch::nn::Sequential encoder_{nullptr};
  VectorQuantizer quantizer_{nullptr};
  torch::nn::Sequential decoder_{nullptr};
};
TORCH_MODULE(VqVae);

// Model FLOPs of one training step per image of `image_size` x `image_size` (for throughput in
// FLOP/s and model FLOPs utilisation): 2 x multiply-adds of every convolution's forward pass,
// times 3 for forward and backward, plus the codebook distance matmul once (it has no backward).
// Bias additions and activations are not counted; the sub-pixel upsampling counts as the
// ConvTranspose2d(k4, s2, p1) it equals.
double vqvaeTrainingFlopsPerImage(const VqVaeOptions& options, std::int64_t image_size);

}  // namespace tessera::models
