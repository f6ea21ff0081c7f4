#include "models/vqgan_autoencoder.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "models/parameters.h"

namespace tessera::models {
namespace nn = torch::nn;
namespace {

nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride = 1) {
  const std::int64_t padding = stride == 1 ? k / 2 : 0;
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(padding));
}

at::Tensor swish(const at::Tensor& x) {
  return x * torch::sigmoid(x);
}

bool contains(const std::vector<std::int64_t>& v, std::int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

void checkOptions(const VqganAutoencoderOptions& o) {
  TORCH_CHECK(!o.ch_mult.empty(), "VqganAutoencoder: ch_mult must not be empty");
  TORCH_CHECK(o.ch >= 1 && o.num_res_blocks >= 0 && o.z_channels >= 1 && o.embed_dim >= 1 &&
                  o.in_channels >= 1,
              "VqganAutoencoder: ch, z_channels, embed_dim, in_channels must be >= 1 and "
              "num_res_blocks >= 0");
  for (std::int64_t m : o.ch_mult) TORCH_CHECK(m >= 1, "VqganAutoencoder: ch_mult entries >= 1");
  const std::int64_t factor = std::int64_t{1} << (o.ch_mult.size() - 1);
  TORCH_CHECK(o.resolution % factor == 0, "VqganAutoencoder: resolution ", o.resolution,
              " is not divisible by 2^(levels - 1) = ", factor);
  TORCH_CHECK(o.dropout >= 0 && o.dropout < 1, "VqganAutoencoder: dropout must be in [0, 1)");
}

}  // namespace

VqganDownsampleMode parseVqganDownsampleMode(const std::string& name) {
  if (name == "conv") return VqganDownsampleMode::kConv;
  if (name == "avgpool") return VqganDownsampleMode::kAvgPool;
  throw ConfigError("downsample '" + name + "' is not one of: conv, avgpool");
}

VqganAutoencoderOptions VqganAutoencoderOptions::f16ImageNet() {
  VqganAutoencoderOptions o;  // the defaults are that model
  o.quantizer.codebook_size = 1024;
  return o;
}

VqganAutoencoderOptions VqganAutoencoderOptions::fashionMnist() {
  VqganAutoencoderOptions o;
  o.in_channels = 1;
  o.resolution = 28;
  o.ch = 32;
  o.ch_mult = {1, 2, 2};
  o.num_res_blocks = 1;
  o.attn_resolutions = {7};
  o.z_channels = 64;
  o.embed_dim = 64;
  o.quantizer.codebook_size = 512;
  return o;
}

nn::GroupNorm vqganNorm(std::int64_t groups, std::int64_t channels) {
  TORCH_CHECK(channels % groups == 0, "GroupNorm: ", channels, " channels are not divisible by ",
              groups, " groups");
  return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(1e-6).affine(true));
}

// ---- Blocks ----------------------------------------------------------------------------------

VqganResnetBlockImpl::VqganResnetBlockImpl(std::int64_t in, std::int64_t out, double dropout,
                                           std::int64_t groups) {
  norm1_ = register_module("norm1", vqganNorm(groups, in));
  conv1_ = register_module("conv1", conv(in, out, 3));
  norm2_ = register_module("norm2", vqganNorm(groups, out));
  dropout_ = register_module("dropout", nn::Dropout(nn::DropoutOptions(dropout)));
  conv2_ = register_module("conv2", conv(out, out, 3));
  if (in != out) shortcut_ = register_module("shortcut", conv(in, out, 1));
}

at::Tensor VqganResnetBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv1_->forward(swish(norm1_->forward(x)));
  h = conv2_->forward(dropout_->forward(swish(norm2_->forward(h))));
  return (shortcut_ ? shortcut_->forward(x) : x) + h;
}

VqganAttentionImpl::VqganAttentionImpl(std::int64_t c, std::int64_t groups) {
  norm_ = register_module("norm", vqganNorm(groups, c));
  q_ = register_module("q", conv(c, c, 1));
  k_ = register_module("k", conv(c, c, 1));
  v_ = register_module("v", conv(c, c, 1));
  proj_out_ = register_module("proj_out", conv(c, c, 1));
}

at::Tensor VqganAttentionImpl::forward(const at::Tensor& x) {
  const std::int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const at::Tensor n = norm_->forward(x);
  const at::Tensor q = q_->forward(n).reshape({b, c, h * w}).transpose(1, 2);  // [B, N, C]
  const at::Tensor k = k_->forward(n).reshape({b, c, h * w});                  // [B, C, N]
  const at::Tensor v = v_->forward(n).reshape({b, c, h * w});                  // [B, C, N]
  // attention[b, i, j]: how much position i reads from position j
  const at::Tensor attention =
      at::softmax(at::bmm(q, k) * (1.0 / std::sqrt(static_cast<double>(c))), 2);
  const at::Tensor out = at::bmm(v, attention.transpose(1, 2)).reshape({b, c, h, w});
  return x + proj_out_->forward(out);
}

VqganDownsampleImpl::VqganDownsampleImpl(std::int64_t c, VqganDownsampleMode mode) {
  if (mode == VqganDownsampleMode::kConv) conv_ = register_module("conv", conv(c, c, 3, 2));
}

at::Tensor VqganDownsampleImpl::forward(const at::Tensor& x) {
  if (!conv_) return torch::avg_pool2d(x, 2, 2);
  // Zero padding (left 0, right 1, top 0, bottom 1), then 3x3 stride 2 without padding.
  return conv_->forward(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0));
}

VqganUpsampleImpl::VqganUpsampleImpl(std::int64_t c) {
  conv_ = register_module("conv", conv(c, c, 3));
}

at::Tensor VqganUpsampleImpl::forward(const at::Tensor& x) {
  // Nearest-neighbour x2: every pixel repeated in a 2x2 square.
  const std::int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const at::Tensor up =
      x.reshape({b, c, h, 1, w, 1}).expand({b, c, h, 2, w, 2}).reshape({b, c, 2 * h, 2 * w});
  return conv_->forward(up);
}

// ---- Encoder and decoder ---------------------------------------------------------------------

VqganEncoderImpl::VqganEncoderImpl(const VqganAutoencoderOptions& o) {
  checkOptions(o);
  const std::int64_t levels = static_cast<std::int64_t>(o.ch_mult.size()), g = o.norm_groups;
  conv_in_ = register_module("conv_in", conv(o.in_channels, o.ch, 3));
  down_ = register_module("down", nn::ModuleList());
  std::int64_t side = o.resolution, channels = o.ch;
  for (std::int64_t i = 0; i < levels; ++i) {
    nn::Sequential level;
    const std::int64_t out = o.ch * o.ch_mult[static_cast<std::size_t>(i)];
    for (std::int64_t j = 0; j < o.num_res_blocks; ++j) {
      level->push_back(VqganResnetBlock(channels, out, o.dropout, g));
      channels = out;
      if (contains(o.attn_resolutions, side)) level->push_back(VqganAttention(channels, g));
    }
    if (i != levels - 1) {
      level->push_back(VqganDownsample(channels, o.downsample));
      side /= 2;
    }
    down_->push_back(level);
  }
  mid_ = register_module("mid", nn::Sequential());
  mid_->push_back(VqganResnetBlock(channels, channels, o.dropout, g));
  if (o.mid_attention) mid_->push_back(VqganAttention(channels, g));
  mid_->push_back(VqganResnetBlock(channels, channels, o.dropout, g));
  norm_out_ = register_module("norm_out", vqganNorm(g, channels));
  conv_out_ = register_module("conv_out", conv(channels, o.z_channels, 3));
}

at::Tensor VqganEncoderImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv_in_->forward(x);
  for (const auto& level : *down_) h = level->as<nn::Sequential>()->forward(h);
  h = mid_->forward(h);
  return conv_out_->forward(swish(norm_out_->forward(h)));
}

VqganDecoderImpl::VqganDecoderImpl(const VqganAutoencoderOptions& o) {
  checkOptions(o);
  const std::int64_t levels = static_cast<std::int64_t>(o.ch_mult.size()), g = o.norm_groups;
  const std::int64_t out_channels = o.out_channels > 0 ? o.out_channels : o.in_channels;
  std::int64_t channels = o.ch * o.ch_mult.back();
  std::int64_t side = o.resolution >> (levels - 1);
  conv_in_ = register_module("conv_in", conv(o.z_channels, channels, 3));
  mid_ = register_module("mid", nn::Sequential());
  mid_->push_back(VqganResnetBlock(channels, channels, o.dropout, g));
  if (o.mid_attention) mid_->push_back(VqganAttention(channels, g));
  mid_->push_back(VqganResnetBlock(channels, channels, o.dropout, g));
  up_ = register_module("up", nn::ModuleList());
  for (std::int64_t i = levels - 1; i >= 0; --i) {
    nn::Sequential level;
    const std::int64_t out = o.ch * o.ch_mult[static_cast<std::size_t>(i)];
    for (std::int64_t j = 0; j < o.num_res_blocks + 1; ++j) {
      level->push_back(VqganResnetBlock(channels, out, o.dropout, g));
      channels = out;
      if (contains(o.attn_resolutions, side)) level->push_back(VqganAttention(channels, g));
    }
    if (i != 0) {
      level->push_back(VqganUpsample(channels));
      side *= 2;
    }
    up_->push_back(level);
  }
  norm_out_ = register_module("norm_out", vqganNorm(g, channels));
  conv_out_ = register_module("conv_out", conv(channels, out_channels, 3));
}

at::Tensor VqganDecoderImpl::forward(const at::Tensor& z) {
  at::Tensor h = mid_->forward(conv_in_->forward(z));
  for (const auto& level : *up_) h = level->as<nn::Sequential>()->forward(h);
  return conv_out_->forward(swish(norm_out_->forward(h)));
}

// ---- Autoencoder -----------------------------------------------------------------------------

VqganAutoencoderImpl::VqganAutoencoderImpl(const VqganAutoencoderOptions& o) : options_(o) {
  checkOptions(o);
  encoder_ = register_module("encoder", VqganEncoder(o));
  quant_conv_ = register_module("quant_conv", conv(o.z_channels, o.embed_dim, 1));
  quantizer_ = register_module("quantizer", makeQuantizer(o.quantizer, o.embed_dim));
  post_quant_conv_ = register_module("post_quant_conv", conv(o.embed_dim, o.z_channels, 1));
  decoder_ = register_module("decoder", VqganDecoder(o));
}

at::Tensor VqganAutoencoderImpl::encode(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == options_.in_channels,
              "VqganAutoencoder: expected images [B, ", options_.in_channels, ", H, W], got ",
              images.sizes());
  return quant_conv_->forward(encoder_->forward(images));
}

QuantizeResult VqganAutoencoderImpl::quantize(const at::Tensor& latents, const QuantizeCall& call) {
  return quantizer_->forward(latents, call);
}

at::Tensor VqganAutoencoderImpl::decode(const at::Tensor& quantized) {
  return decoder_->forward(post_quant_conv_->forward(quantized));
}

at::Tensor VqganAutoencoderImpl::decodeCodes(const at::Tensor& codes) {
  return decode(quantizer_->lookup(codes));
}

VqganOutput VqganAutoencoderImpl::forward(const at::Tensor& images, const QuantizeCall& call) {
  VqganOutput out;
  out.latents = encode(images);
  out.quant = quantize(out.latents, call);
  out.reconstruction = decode(out.quant.quantized);
  return out;
}

std::int64_t VqganAutoencoderImpl::latentResolution() const {
  return options_.resolution >> (options_.ch_mult.size() - 1);
}

VqganParameterCounts VqganAutoencoderImpl::parameterCounts() const {
  VqganParameterCounts c;
  c.encoder = trainableParameterCount(*encoder_) + trainableParameterCount(*quant_conv_);
  c.quantizer = trainableParameterCount(*quantizer_);
  c.decoder = trainableParameterCount(*post_quant_conv_) + trainableParameterCount(*decoder_);
  c.total = trainableParameterCount(*this);
  return c;
}

}  // namespace tessera::models
