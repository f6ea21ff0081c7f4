// The VQGAN autoencoder (Esser et al. 2021, "Taming Transformers for High-Resolution Image
// Synthesis"; its convolutional encoder and decoder follow the DDPM U-Net's halves of Ho et al.
// 2020 without time embedding):
//
//   Encoder  conv_in 3x3 (in -> ch); per level i (ch * ch_mult[i] channels) num_res_blocks
//            ResNet blocks, each followed by self-attention where the side is in
//            attn_resolutions; every level but the last halves the side (VqganDownsample); middle:
//            ResNet, attention, ResNet; GroupNorm, swish, conv_out 3x3 -> z_channels.
//   quant_conv 1x1 (z_channels -> embed_dim), the quantizer (models/vqgan_quantizers.h),
//   post_quant_conv 1x1 (embed_dim -> z_channels),
//   Decoder  conv_in 3x3 (z_channels -> ch * ch_mult.back()); middle as in the encoder; per
//            level from the last to the first num_res_blocks + 1 ResNet blocks (+ attention),
//            every level but the first doubles the side (VqganUpsample); GroupNorm, swish,
//            conv_out 3x3 -> out_channels.
//
// ResNet block: GroupNorm(32, eps 1e-6, affine), swish, conv 3x3, GroupNorm, swish, dropout,
// conv 3x3, plus the input (through a 1x1 conv when the channels change). Attention: one head
// over the h*w positions, GroupNorm then 1x1 q, k, v and output projections, residual.
// Downsampling: by default a 3x3 stride-2 convolution after zero-padding one row at the bottom
// and one column at the right (asymmetric: 2s -> s exactly), or 2x2 average pooling. Upsampling:
// nearest-neighbour x2, then conv 3x3.
//
// Parameters start from LibTorch's default initialisation (deterministic given
// torch::manual_seed). The side must be divisible by 2^(levels - 1): 28 -> 14 -> 7 for
// ch_mult [1, 2, 2].
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/vqgan_quantizers.h"

namespace tessera::models {

enum class VqganDownsampleMode { kConv, kAvgPool };
// "conv", "avgpool"; throws ConfigError otherwise.
VqganDownsampleMode parseVqganDownsampleMode(const std::string& name);

struct VqganAutoencoderOptions {
  std::int64_t in_channels = 3;
  std::int64_t out_channels = 0;  // 0: in_channels
  std::int64_t resolution = 256;  // input side (square images)
  std::int64_t ch = 128;
  std::vector<std::int64_t> ch_mult{1, 1, 2, 2, 4};
  std::int64_t num_res_blocks = 2;
  std::vector<std::int64_t> attn_resolutions{16};
  bool mid_attention = true;  // the attention block between the middle ResNet blocks
  std::int64_t z_channels = 256;
  std::int64_t embed_dim = 256;
  double dropout = 0.0;  // inside ResNet blocks; drawn from the global generator
  VqganDownsampleMode downsample = VqganDownsampleMode::kConv;
  std::int64_t norm_groups = 32;
  QuantizerOptions quantizer;  // codebook_size = n_embed (1024 here)

  // taming-transformers' f16 ImageNet model (vqgan_imagenet_f16_1024): ch 128, ch_mult
  // [1,1,2,2,4], 2 res blocks, attention at 16, z_channels = embed_dim = 256, 1024 codes, 256x256.
  static VqganAutoencoderOptions f16ImageNet();
  // A small Fashion-MNIST model (28x28x1 -> 7x7 codes): ch 32, ch_mult [1,2,2], 1 res block,
  // attention at 7 (and in the middle), z_channels = embed_dim = 64, 512 codes.
  static VqganAutoencoderOptions fashionMnist();
};

// GroupNorm(groups, channels, eps 1e-6, affine), checked for divisibility.
torch::nn::GroupNorm vqganNorm(std::int64_t groups, std::int64_t channels);

class VqganResnetBlockImpl : public torch::nn::Module {
 public:
  VqganResnetBlockImpl(std::int64_t in_channels, std::int64_t out_channels, double dropout,
                       std::int64_t groups);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, shortcut_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(VqganResnetBlock);

class VqganAttentionImpl : public torch::nn::Module {
 public:
  VqganAttentionImpl(std::int64_t channels, std::int64_t groups);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d q_{nullptr}, k_{nullptr}, v_{nullptr}, proj_out_{nullptr};
};
TORCH_MODULE(VqganAttention);

class VqganDownsampleImpl : public torch::nn::Module {
 public:
  VqganDownsampleImpl(std::int64_t channels, VqganDownsampleMode mode);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv_{nullptr};  // null for kAvgPool
};
TORCH_MODULE(VqganDownsample);

class VqganUpsampleImpl : public torch::nn::Module {
 public:
  explicit VqganUpsampleImpl(std::int64_t channels);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(VqganUpsample);

class VqganEncoderImpl : public torch::nn::Module {
 public:
  explicit VqganEncoderImpl(const VqganAutoencoderOptions& options);
  at::Tensor forward(const at::Tensor& x);  // [B, in, R, R] -> [B, z_channels, r, r]

 private:
  torch::nn::Conv2d conv_in_{nullptr};
  torch::nn::ModuleList down_{nullptr};  // per level: a Sequential
  torch::nn::Sequential mid_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
  torch::nn::Conv2d conv_out_{nullptr};
};
TORCH_MODULE(VqganEncoder);

class VqganDecoderImpl : public torch::nn::Module {
 public:
  explicit VqganDecoderImpl(const VqganAutoencoderOptions& options);
  at::Tensor forward(const at::Tensor& z);  // [B, z_channels, r, r] -> [B, out, R, R]
  // conv_out's weight [out, ch * ch_mult[0], 3, 3]: the "last layer" of the adaptive weight.
  const at::Tensor& lastLayerWeight() const { return conv_out_->weight; }

 private:
  torch::nn::Conv2d conv_in_{nullptr};
  torch::nn::Sequential mid_{nullptr};
  torch::nn::ModuleList up_{nullptr};  // in execution order (lowest resolution first)
  torch::nn::GroupNorm norm_out_{nullptr};
  torch::nn::Conv2d conv_out_{nullptr};
};
TORCH_MODULE(VqganDecoder);

struct VqganOutput {
  at::Tensor reconstruction;  // [B, out, R, R]
  at::Tensor latents;         // the quantizer's input [B, embed_dim, r, r]
  QuantizeResult quant;       // quantized, loss, codes, counts, terms
};

// Trainable parameter counts by part (models/parameters.h's rule).
struct VqganParameterCounts {
  std::int64_t encoder = 0;  // encoder + quant_conv
  std::int64_t quantizer = 0;
  std::int64_t decoder = 0;  // post_quant_conv + decoder
  std::int64_t total = 0;
};

// Submodules: "encoder", "quant_conv", "quantizer", "post_quant_conv", "decoder".
class VqganAutoencoderImpl : public torch::nn::Module {
 public:
  explicit VqganAutoencoderImpl(const VqganAutoencoderOptions& options);

  // One forward: encode, quantize (call: Gumbel temperature and noise generator), decode.
  VqganOutput forward(const at::Tensor& images, const QuantizeCall& call = {});
  at::Tensor encode(const at::Tensor& images);  // the latents: after quant_conv
  QuantizeResult quantize(const at::Tensor& latents, const QuantizeCall& call = {});
  at::Tensor decode(const at::Tensor& quantized);   // through post_quant_conv and the decoder
  at::Tensor decodeCodes(const at::Tensor& codes);  // [B, r, r] int64 -> images

  // The weight whose gradients give the adaptive GAN weight (decoder conv_out).
  const at::Tensor& lastLayerWeight() const { return decoder_->lastLayerWeight(); }
  std::int64_t latentResolution() const;  // r = resolution / 2^(levels - 1)

  Quantizer& quantizer() { return *quantizer_; }
  const Quantizer& quantizer() const { return *quantizer_; }
  VqganEncoder& encoder() { return encoder_; }
  VqganDecoder& decoder() { return decoder_; }
  const VqganAutoencoderOptions& options() const { return options_; }
  VqganParameterCounts parameterCounts() const;

 private:
  VqganAutoencoderOptions options_;
  VqganEncoder encoder_{nullptr};
  torch::nn::Conv2d quant_conv_{nullptr};
  std::shared_ptr<Quantizer> quantizer_;
  torch::nn::Conv2d post_quant_conv_{nullptr};
  VqganDecoder decoder_{nullptr};
};
TORCH_MODULE(VqganAutoencoder);

}  // namespace tessera::models
