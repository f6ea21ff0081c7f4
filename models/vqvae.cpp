#include "models/vqvae.h"

#include <cmath>

#include <torch/torch.h>

#include "models/upsample_conv.h"

namespace tessera::models {
namespace nn = torch::nn;

ResidualBlockImpl::ResidualBlockImpl(std::int64_t channels, std::int64_t hidden) {
  body_ = register_module(
      "body",
      nn::Sequential(nn::ReLU(), nn::Conv2d(nn::Conv2dOptions(channels, hidden, 3).padding(1)),
                     nn::ReLU(), nn::Conv2d(nn::Conv2dOptions(hidden, channels, 1))));
}

at::Tensor ResidualBlockImpl::forward(const at::Tensor& x) {
  return x + body_->forward(x);
}

VqVaeImpl::VqVaeImpl(const VqVaeOptions& o) : options_(o) {
  TORCH_CHECK(o.downsample >= 1, "VqVae: downsample must be >= 1");
  TORCH_CHECK(o.hidden >= 2, "VqVae: hidden must be >= 2");
  const std::int64_t half = o.hidden / 2;
  const std::int64_t n = o.downsample;

  nn::Sequential enc;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t in = i == 0 ? o.in_channels : half;
    const std::int64_t out = i == n - 1 ? o.hidden : half;
    enc->push_back(nn::Conv2d(nn::Conv2dOptions(in, out, 4).stride(2).padding(1)));
    enc->push_back(nn::ReLU());
  }
  enc->push_back(nn::Conv2d(nn::Conv2dOptions(o.hidden, o.hidden, 3).padding(1)));
  for (std::int64_t i = 0; i < o.res_blocks; ++i)
    enc->push_back(ResidualBlock(o.hidden, o.res_hidden));
  enc->push_back(nn::ReLU());
  enc->push_back(nn::Conv2d(nn::Conv2dOptions(o.hidden, o.quantizer.code_dim, 1)));
  encoder_ = register_module("encoder", enc);

  quantizer_ = register_module("quantizer", VectorQuantizer(o.quantizer));

  nn::Sequential dec;
  dec->push_back(nn::Conv2d(nn::Conv2dOptions(o.quantizer.code_dim, o.hidden, 3).padding(1)));
  for (std::int64_t i = 0; i < o.res_blocks; ++i)
    dec->push_back(ResidualBlock(o.hidden, o.res_hidden));
  dec->push_back(nn::ReLU());
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t in = i == 0 ? o.hidden : half;
    const std::int64_t out = i == n - 1 ? o.in_channels : half;
    dec->push_back(UpsampleConv(in, out));  // = ConvTranspose2d(in, out, 4, stride 2, padding 1)
    if (i != n - 1) dec->push_back(nn::ReLU());
  }
  decoder_ = register_module("decoder", dec);
}

double vqvaeTrainingFlopsPerImage(const VqVaeOptions& o, std::int64_t image_size) {
  // Multiply-adds of a k x k convolution with `side` x `side` outputs, or of a transposed one
  // with `side` x `side` inputs.
  const auto conv = [](double cin, double cout, double k, double side) {
    return cin * cout * k * k * side * side;
  };
  const double half = static_cast<double>(o.hidden / 2), hidden = static_cast<double>(o.hidden);
  const double d = static_cast<double>(o.quantizer.code_dim);
  double macs = 0;
  double side = static_cast<double>(image_size);
  for (std::int64_t i = 0; i < o.downsample; ++i) {  // Conv k4 s2: output side / 2
    const double in = i == 0 ? static_cast<double>(o.in_channels) : half;
    const double out = i == o.downsample - 1 ? hidden : half;
    side = std::floor(side / 2);
    macs += conv(in, out, 4, side);
  }
  const double latent = side;
  const double res = static_cast<double>(o.res_blocks) *
                     (conv(hidden, static_cast<double>(o.res_hidden), 3, latent) +
                      conv(static_cast<double>(o.res_hidden), hidden, 1, latent));
  macs += conv(hidden, hidden, 3, latent) + res + conv(hidden, d, 1, latent);  // encoder trunk
  macs += conv(d, hidden, 3, latent) + res;                                    // decoder trunk
  for (std::int64_t i = 0; i < o.downsample; ++i) {  // ConvTranspose k4 s2: input side doubles
    const double in = i == 0 ? hidden : half;
    const double out = i == o.downsample - 1 ? static_cast<double>(o.in_channels) : half;
    macs += conv(in, out, 4, side);
    side *= 2;
  }
  const double codebook = latent * latent * d * static_cast<double>(o.quantizer.codebook_size);
  return 2 * 3 * macs + 2 * codebook;
}

at::Tensor VqVaeImpl::encode(const at::Tensor& images) {
  return encoder_->forward(images);
}

at::Tensor VqVaeImpl::decode(const at::Tensor& quantized) {
  return decoder_->forward(quantized);
}

VqVaeOutput VqVaeImpl::forward(const at::Tensor& images) {
  at::Tensor z = encode(images);
  QuantizerOutput q = quantizer_->forward(z);
  return {decode(q.quantized), q.commitment, q.codes, z};
}

at::Tensor VqVaeImpl::decodeCodes(const at::Tensor& codes) {
  return decode(quantizer_->lookup(codes));
}

}  // namespace tessera::models
