// The denoising UNet of Ho et al. 2020 (DDPM), with the multi-head attention and class
// conditioning of Dhariwal & Nichol 2021 (ADM):
//
//   t -> sinusoidal embedding (ch) -> Linear(ch, 4ch) -> SiLU -> Linear(4ch, 4ch)  (= emb)
//        (+ a learned embedding of the class label, num_classes + 1 entries: the last is the
//         "null" class used for label dropout and classifier-free guidance)
//   x -> Conv3x3(in, ch)
//     -> per level i (resolution r / 2^i): num_res_blocks x [ResBlock(ch * ch_mult[i]),
//        attention when r / 2^i is in attn_resolutions], then a stride-2 Conv3x3 except at the last
//     -> middle: ResBlock, attention (mid_attention), ResBlock
//     -> per level, reversed: (num_res_blocks + 1) x [concat the matching skip, ResBlock,
//        attention], then nearest x2 upsampling + Conv3x3 except at level 0
//     -> GroupNorm -> SiLU -> Conv3x3(ch, out)
//   ResBlock(in -> out): GroupNorm -> SiLU -> Conv3x3 -> + Linear(SiLU(emb)) -> GroupNorm -> SiLU
//     -> Dropout -> Conv3x3, plus the input through a 1x1 (or 3x3) convolution when in != out.
//
// Initialisation as DDPM's: Xavier-uniform weights, zero biases, and zero weights on each
// block's last layer (ResBlock's second convolution, attention's output projection, the output
// convolution), so every block starts as the identity. The caller seeds LibTorch's default
// generator first (the trainer keys it with RngPurpose::kInit).
//
// Dropout is keyed when the caller passes a UNetDropoutKey: each global sample's mask comes from
// a counter-based hash of (key, layer, global sample index, element), on the device, so N ranks
// with batch B draw the masks one process with batch N x B draws, and a resumed run draws the
// same ones. Without a key, training-mode dropout uses LibTorch's default generator.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace tessera::models {

struct UNetOptions {
  std::int64_t in_channels = 3;
  std::int64_t out_channels = 0;  // 0: in_channels
  std::int64_t resolution = 32;   // square inputs; divisible by 2^(levels - 1)
  std::int64_t ch = 128;
  std::vector<std::int64_t> ch_mult{1, 2, 2, 2};
  std::int64_t num_res_blocks = 2;
  std::vector<std::int64_t> attn_resolutions{16};
  bool mid_attention = true;
  std::int64_t num_heads = 1;
  double dropout = 0.1;
  std::int64_t num_classes = 0;  // > 0: class-conditional, labels in [0, num_classes]
  std::int64_t norm_groups = 32;
  double norm_eps = 1e-6;
  bool conv_shortcut = false;  // 3x3 instead of 1x1 convolution on skips that change channels

  // The DDPM CIFAR-10 model (`ddpm-cifar10`): 35,746,307 trainable parameters.
  static UNetOptions ddpmCifar10();
  // A small Fashion-MNIST model (`ddpm-fmnist`, 28x28x1: 28 -> 14 -> 7).
  static UNetOptions ddpmFmnist();

  std::int64_t outChannels() const { return out_channels > 0 ? out_channels : in_channels; }
  std::int64_t nullLabel() const { return num_classes; }
};

// Keyed dropout for one forward pass: `key` for the step (e.g. rngKey(seed, kDropout, step)),
// `first_sample` the global index of the batch's first sample.
struct UNetDropoutKey {
  std::uint64_t key = 0;
  std::int64_t first_sample = 0;
};

// Sinusoidal embedding [B, dim] of (real-valued) timesteps [B], as in DDPM: sin of the first
// half, cos of the second, frequencies 10000^(-i / (dim/2 - 1)).
at::Tensor timestepEmbedding(const at::Tensor& t, std::int64_t dim);

// Dropout with p whose mask for global sample first + i comes from a counter-based hash of
// (key, first + i, element index), computed on x's device (see above); kept values are scaled by
// 1 / (1 - p). The mask alone: keyedDropoutMask (values 0 and 1 / (1 - p)); on the CPU it is
// computed by a loop, elsewhere by tensor operations (`tensor_ops` forces those on the CPU, for
// tests: both give the same mask).
at::Tensor keyedDropout(const at::Tensor& x, double p, std::uint64_t key,
                        std::int64_t first_sample);
at::Tensor keyedDropoutMask(at::IntArrayRef sizes, double p, std::uint64_t key,
                            std::int64_t first_sample, const at::TensorOptions& options,
                            bool tensor_ops = false);

namespace detail {
struct UNetBlockContext;
}

class UNetResBlockImpl : public torch::nn::Module {
 public:
  UNetResBlockImpl(std::int64_t in, std::int64_t out, std::int64_t emb_dim,
                   const UNetOptions& options, std::int64_t layer_id);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb,
                     const detail::UNetBlockContext& ctx);

 private:
  double dropout_;
  std::int64_t layer_id_;
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  torch::nn::Linear emb_proj_{nullptr};
};
TORCH_MODULE(UNetResBlock);

class UNetAttentionImpl : public torch::nn::Module {
 public:
  UNetAttentionImpl(std::int64_t channels, const UNetOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::int64_t heads_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d qkv_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(UNetAttention);

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(const UNetOptions& options);

  // x [B, in, r, r]; t [B] timesteps (any real dtype: integer indices, or scaled continuous
  // times); labels int64 [B] in [0, num_classes] (num_classes = null class; undefined: all
  // null) for a class-conditional model, and must be undefined otherwise.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels = {},
                     const std::optional<UNetDropoutKey>& dropout = std::nullopt);

  const UNetOptions& options() const { return options_; }

 private:
  UNetOptions options_;
  torch::nn::Linear temb0_{nullptr}, temb1_{nullptr};
  torch::nn::Embedding label_emb_{nullptr};
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
  // Down path: per level, res blocks (and attention, or none) then a downsampling convolution.
  torch::nn::ModuleList down_blocks_{nullptr}, down_attn_{nullptr}, downsample_{nullptr};
  UNetResBlock mid1_{nullptr}, mid2_{nullptr};
  UNetAttention mid_attn_{nullptr};
  torch::nn::ModuleList up_blocks_{nullptr}, up_attn_{nullptr}, upsample_{nullptr};
  // Which blocks have attention, in order of the lists above.
  std::vector<bool> down_has_attn_, up_has_attn_;
};
TORCH_MODULE(UNet);

// Model FLOPs of one training step per image: 2 x multiply-adds of every convolution, linear
// layer and attention product (QK^T and AV) of the forward pass, times 3 for forward and
// backward. Normalisation, activations, additions and the upsampling copy are not counted.
double unetTrainingFlopsPerImage(const UNetOptions& options);

}  // namespace tessera::models
