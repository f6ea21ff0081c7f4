#include "models/unet.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include <ATen/Parallel.h>

#include "core/keyed_rng.h"

namespace tessera::models {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace detail {
struct UNetBlockContext {
  bool training = false;
  std::optional<UNetDropoutKey> dropout;
};
}  // namespace detail

UNetOptions UNetOptions::ddpmCifar10() {
  UNetOptions o;
  o.in_channels = 3;
  o.resolution = 32;
  o.ch = 128;
  o.ch_mult = {1, 2, 2, 2};
  o.num_res_blocks = 2;
  o.attn_resolutions = {16};
  o.mid_attention = true;
  o.dropout = 0.1;
  return o;
}

UNetOptions UNetOptions::ddpmFmnist() {
  UNetOptions o;
  o.in_channels = 1;
  o.resolution = 28;
  o.ch = 32;
  o.ch_mult = {1, 2, 2};
  o.num_res_blocks = 1;
  o.attn_resolutions = {7};
  o.mid_attention = true;
  o.dropout = 0.1;
  o.norm_groups = 8;
  return o;
}

at::Tensor timestepEmbedding(const at::Tensor& t, std::int64_t dim) {
  TORCH_CHECK(t.dim() == 1, "timestepEmbedding: t must be 1-d, got ", t.sizes());
  TORCH_CHECK(dim >= 4 && dim % 2 == 0, "timestepEmbedding: dim must be even and >= 4");
  const std::int64_t half = dim / 2;
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(t.device());
  const at::Tensor freqs =
      at::exp(at::arange(half, opts) * (-std::log(10000.0) / static_cast<double>(half - 1)));
  const at::Tensor args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({at::sin(args), at::cos(args)}, 1);
}

namespace {

constexpr std::int64_t kLow32 = 0xffffffffLL;
constexpr std::uint32_t kMul1 = 0x7feb352du, kMul2 = 0x5bd1e995u;

// A 32-bit mixing bijection: xor-shifts and multiplications by odd constants (below 2^31, so the
// tensor form below never leaves int64).
inline std::uint32_t mix32(std::uint32_t x) {
  x ^= x >> 16;
  x *= kMul1;
  x ^= x >> 15;
  x *= kMul2;
  return x ^ (x >> 16);
}

// The same on int64 tensors holding values in [0, 2^32) (any device).
at::Tensor mix32(at::Tensor x) {
  x = x.bitwise_xor(x.__rshift__(16));
  x = x.mul(static_cast<std::int64_t>(kMul1)).bitwise_and(kLow32);
  x = x.bitwise_xor(x.__rshift__(15));
  x = x.mul(static_cast<std::int64_t>(kMul2)).bitwise_and(kLow32);
  return x.bitwise_xor(x.__rshift__(16));
}

// DDPM's initialisation: Xavier-uniform (fan_avg) weights, or zero weights for the last layer
// of a residual branch and the output; zero biases.
template <typename Layer>
void initDdpm(Layer& layer, bool zero = false) {
  torch::NoGradGuard no_grad;
  if (zero) {
    layer.weight.zero_();
  } else {
    nn::init::xavier_uniform_(layer.weight);
  }
  if (layer.bias.defined()) layer.bias.zero_();
}

}  // namespace

at::Tensor keyedDropoutMask(at::IntArrayRef sizes, double p, std::uint64_t key,
                            std::int64_t first_sample, const at::TensorOptions& options,
                            bool tensor_ops) {
  TORCH_CHECK(p >= 0 && p < 1, "keyedDropout: p must be in [0, 1)");
  TORCH_CHECK(!sizes.empty(), "keyedDropout: needs a batch dimension");
  const std::int64_t n = sizes[0];
  std::int64_t per_sample = 1;
  for (std::size_t d = 1; d < sizes.size(); ++d) per_sample *= sizes[d];
  TORCH_CHECK(per_sample <= kLow32, "keyedDropout: too many elements per sample");
  // Element e of sample i is kept when the top 24 bits of
  // mix32(mix32(e ^ lo_i) ^ hi_i) reach ceil(p 2^24); (lo_i, hi_i) = the halves of
  // rngKey(key, kDropout, first_sample + i).
  const auto threshold = static_cast<std::int64_t>(std::ceil(p * 16777216.0));
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    keys[static_cast<std::size_t>(i)] =
        rngKey(key, RngPurpose::kDropout, static_cast<std::uint64_t>(first_sample + i));
  }
  const auto dtype = options.dtype().toScalarType();
  if (options.device().is_cpu() && !tensor_ops) {
    at::Tensor mask = at::empty(sizes, options.dtype(at::kFloat));
    float* out = mask.data_ptr<float>();
    at::parallel_for(0, n * per_sample, 1 << 14, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t j = begin; j < end; ++j) {
        const std::uint64_t k = keys[static_cast<std::size_t>(j / per_sample)];
        const auto e = static_cast<std::uint32_t>(j % per_sample);
        const std::uint32_t h =
            mix32(mix32(e ^ static_cast<std::uint32_t>(k)) ^ static_cast<std::uint32_t>(k >> 32));
        out[j] = static_cast<std::int64_t>(h >> 8) >= threshold ? scale : 0.0f;
      }
    });
    return dtype == at::kFloat ? mask : mask.to(dtype);
  }
  at::Tensor seeds = at::empty({2, n, 1}, at::kLong);
  auto s = seeds.accessor<std::int64_t, 3>();
  for (std::int64_t i = 0; i < n; ++i) {
    s[0][i][0] = static_cast<std::int64_t>(keys[static_cast<std::size_t>(i)] & 0xffffffffULL);
    s[1][i][0] = static_cast<std::int64_t>(keys[static_cast<std::size_t>(i)] >> 32);
  }
  seeds = seeds.to(options.device());
  const at::Tensor element =
      at::arange(per_sample, at::TensorOptions().dtype(at::kLong).device(options.device()))
          .view({1, -1});
  at::Tensor h = mix32(element.bitwise_xor(seeds[0]));
  h = mix32(h.bitwise_xor(seeds[1]));
  return h.__rshift__(8).ge(threshold).to(dtype).mul_(scale).view(sizes);
}

at::Tensor keyedDropout(const at::Tensor& x, double p, std::uint64_t key,
                        std::int64_t first_sample) {
  if (p == 0 || x.numel() == 0) return x;
  return x * keyedDropoutMask(x.sizes(), p, key, first_sample, x.options());
}

UNetResBlockImpl::UNetResBlockImpl(std::int64_t in, std::int64_t out, std::int64_t emb_dim,
                                   const UNetOptions& o, std::int64_t layer_id)
    : dropout_(o.dropout), layer_id_(layer_id) {
  norm1_ = register_module("norm1",
                           nn::GroupNorm(nn::GroupNormOptions(o.norm_groups, in).eps(o.norm_eps)));
  conv1_ = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1)));
  emb_proj_ = register_module("emb_proj", nn::Linear(emb_dim, out));
  norm2_ = register_module("norm2",
                           nn::GroupNorm(nn::GroupNormOptions(o.norm_groups, out).eps(o.norm_eps)));
  conv2_ = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(out, out, 3).padding(1)));
  if (in != out) {
    const std::int64_t k = o.conv_shortcut ? 3 : 1;
    skip_ = register_module("skip", nn::Conv2d(nn::Conv2dOptions(in, out, k).padding(k / 2)));
    initDdpm(*skip_);
  }
  initDdpm(*conv1_);
  initDdpm(*emb_proj_);
  initDdpm(*conv2_, /*zero=*/true);
}

at::Tensor UNetResBlockImpl::forward(const at::Tensor& x, const at::Tensor& emb,
                                     const detail::UNetBlockContext& ctx) {
  at::Tensor h = conv1_->forward(torch::silu(norm1_->forward(x)));
  h = h + emb_proj_->forward(torch::silu(emb)).unsqueeze(-1).unsqueeze(-1);
  h = torch::silu(norm2_->forward(h));
  if (ctx.training && dropout_ > 0) {
    if (ctx.dropout) {
      h = keyedDropout(
          h, dropout_,
          rngKey(ctx.dropout->key, RngPurpose::kDropout, static_cast<std::uint64_t>(layer_id_)),
          ctx.dropout->first_sample);
    } else {
      h = torch::dropout(h, dropout_, /*train=*/true);
    }
  }
  h = conv2_->forward(h);
  return (skip_ ? skip_->forward(x) : x) + h;
}

UNetAttentionImpl::UNetAttentionImpl(std::int64_t channels, const UNetOptions& o)
    : heads_(o.num_heads) {
  TORCH_CHECK(heads_ >= 1 && channels % heads_ == 0, "UNet attention: ", channels,
              " channels do not split into ", heads_, " heads");
  norm_ = register_module(
      "norm", nn::GroupNorm(nn::GroupNormOptions(o.norm_groups, channels).eps(o.norm_eps)));
  qkv_ = register_module("qkv", nn::Conv2d(nn::Conv2dOptions(channels, 3 * channels, 1)));
  proj_ = register_module("proj", nn::Conv2d(nn::Conv2dOptions(channels, channels, 1)));
  initDdpm(*qkv_);
  initDdpm(*proj_, /*zero=*/true);
}

at::Tensor UNetAttentionImpl::forward(const at::Tensor& x) {
  const std::int64_t b = x.size(0), c = x.size(1), hgt = x.size(2), wid = x.size(3);
  const std::int64_t n = hgt * wid, d = c / heads_;
  const at::Tensor qkv = qkv_->forward(norm_->forward(x)).reshape({b, 3, heads_, d, n});
  const at::Tensor q = qkv.select(1, 0).reshape({b * heads_, d, n});
  const at::Tensor k = qkv.select(1, 1).reshape({b * heads_, d, n});
  const at::Tensor v = qkv.select(1, 2).reshape({b * heads_, d, n});
  // weights[i, j] = softmax_j(q_i . k_j / sqrt(d)); out_i = sum_j weights[i, j] v_j.
  const at::Tensor w =
      at::softmax(at::bmm(q.transpose(1, 2), k).mul_(1.0 / std::sqrt(static_cast<double>(d))), -1);
  const at::Tensor out = at::bmm(v, w.transpose(1, 2)).reshape({b, c, hgt, wid});
  return x + proj_->forward(out);
}

UNetImpl::UNetImpl(const UNetOptions& o) : options_(o) {
  const auto levels = static_cast<std::int64_t>(o.ch_mult.size());
  TORCH_CHECK(levels >= 1, "UNet: ch_mult must not be empty");
  TORCH_CHECK(o.ch >= 4 && o.ch % 2 == 0, "UNet: ch must be even and >= 4");
  TORCH_CHECK(o.num_res_blocks >= 1, "UNet: num_res_blocks must be >= 1");
  TORCH_CHECK(o.dropout >= 0 && o.dropout < 1, "UNet: dropout must be in [0, 1)");
  TORCH_CHECK(o.num_classes >= 0, "UNet: num_classes must be >= 0");
  TORCH_CHECK(o.resolution % (std::int64_t{1} << (levels - 1)) == 0, "UNet: resolution ",
              o.resolution, " is not divisible by 2^", levels - 1, " (", levels, " levels)");
  TORCH_CHECK(o.norm_groups >= 1 && o.ch % o.norm_groups == 0, "UNet: ", o.ch,
              " channels are not divisible into ", o.norm_groups, " GroupNorm groups");
  for (std::int64_t m : o.ch_mult) {
    TORCH_CHECK(m >= 1 && (o.ch * m) % o.norm_groups == 0, "UNet: ", o.ch * m,
                " channels are not divisible into ", o.norm_groups, " GroupNorm groups");
  }
  const std::int64_t emb_dim = 4 * o.ch;
  temb0_ = register_module("temb0", nn::Linear(o.ch, emb_dim));
  temb1_ = register_module("temb1", nn::Linear(emb_dim, emb_dim));
  if (o.num_classes > 0) {
    label_emb_ = register_module("label_emb", nn::Embedding(o.num_classes + 1, emb_dim));
  }
  conv_in_ =
      register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(o.in_channels, o.ch, 3).padding(1)));

  const auto has_attn = [&](std::int64_t res) {
    return std::find(o.attn_resolutions.begin(), o.attn_resolutions.end(), res) !=
           o.attn_resolutions.end();
  };
  std::int64_t layer = 0;  // dropout layer ids, in construction order
  down_blocks_ = register_module("down_blocks", nn::ModuleList());
  down_attn_ = register_module("down_attn", nn::ModuleList());
  downsample_ = register_module("downsample", nn::ModuleList());
  std::vector<std::int64_t> skip_channels{o.ch};
  std::int64_t channels = o.ch, res = o.resolution;
  for (std::int64_t i = 0; i < levels; ++i) {
    const std::int64_t out = o.ch * o.ch_mult[static_cast<std::size_t>(i)];
    for (std::int64_t j = 0; j < o.num_res_blocks; ++j) {
      down_blocks_->push_back(UNetResBlock(channels, out, emb_dim, o, layer++));
      channels = out;
      down_has_attn_.push_back(has_attn(res));
      if (has_attn(res)) down_attn_->push_back(UNetAttention(channels, o));
      skip_channels.push_back(channels);
    }
    if (i != levels - 1) {
      downsample_->push_back(
          nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).stride(2).padding(1)));
      skip_channels.push_back(channels);
      res /= 2;
    }
  }
  mid1_ = register_module("mid1", UNetResBlock(channels, channels, emb_dim, o, layer++));
  if (o.mid_attention) mid_attn_ = register_module("mid_attn", UNetAttention(channels, o));
  mid2_ = register_module("mid2", UNetResBlock(channels, channels, emb_dim, o, layer++));

  up_blocks_ = register_module("up_blocks", nn::ModuleList());
  up_attn_ = register_module("up_attn", nn::ModuleList());
  upsample_ = register_module("upsample", nn::ModuleList());
  for (std::int64_t i = levels - 1; i >= 0; --i) {
    const std::int64_t out = o.ch * o.ch_mult[static_cast<std::size_t>(i)];
    for (std::int64_t j = 0; j < o.num_res_blocks + 1; ++j) {
      const std::int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      up_blocks_->push_back(UNetResBlock(channels + skip, out, emb_dim, o, layer++));
      channels = out;
      up_has_attn_.push_back(has_attn(res));
      if (has_attn(res)) up_attn_->push_back(UNetAttention(channels, o));
    }
    if (i != 0) {
      upsample_->push_back(nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).padding(1)));
      res *= 2;
    }
  }
  norm_out_ = register_module(
      "norm_out", nn::GroupNorm(nn::GroupNormOptions(o.norm_groups, channels).eps(o.norm_eps)));
  conv_out_ = register_module(
      "conv_out", nn::Conv2d(nn::Conv2dOptions(channels, o.outChannels(), 3).padding(1)));

  initDdpm(*temb0_);
  initDdpm(*temb1_);
  initDdpm(*conv_in_);
  for (const auto& m : *downsample_) initDdpm(*m->as<nn::Conv2d>());
  for (const auto& m : *upsample_) initDdpm(*m->as<nn::Conv2d>());
  initDdpm(*conv_out_, /*zero=*/true);
}

at::Tensor UNetImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels,
                             const std::optional<UNetDropoutKey>& dropout) {
  const UNetOptions& o = options_;
  TORCH_CHECK(x.dim() == 4 && x.size(1) == o.in_channels, "UNet: expected [B, ", o.in_channels,
              ", H, W] input, got ", x.sizes());
  const std::int64_t levels = static_cast<std::int64_t>(o.ch_mult.size());
  const std::int64_t factor = std::int64_t{1} << (levels - 1);
  TORCH_CHECK(x.size(2) % factor == 0 && x.size(3) % factor == 0, "UNet: input ", x.size(2), "x",
              x.size(3), " is not divisible by ", factor);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(0), "UNet: expected ", x.size(0),
              " timesteps, got ", t.sizes());

  at::Tensor emb =
      temb1_->forward(torch::silu(temb0_->forward(timestepEmbedding(t.to(x.device()), o.ch))));
  if (o.num_classes > 0) {
    const at::Tensor y = labels.defined()
                             ? labels.to(x.device(), at::kLong)
                             : at::full({x.size(0)}, o.num_classes,
                                        at::TensorOptions().dtype(at::kLong).device(x.device()));
    TORCH_CHECK(y.dim() == 1 && y.size(0) == x.size(0), "UNet: expected ", x.size(0),
                " labels, got ", y.sizes());
    emb = emb + label_emb_->forward(y);
  } else {
    TORCH_CHECK(!labels.defined(), "UNet: labels given to a model without classes");
  }
  emb = emb.to(x.scalar_type());

  detail::UNetBlockContext ctx;
  ctx.training = is_training();
  ctx.dropout = dropout;

  std::vector<at::Tensor> skips;
  at::Tensor h = conv_in_->forward(x);
  skips.push_back(h);
  std::size_t block = 0, attn = 0;
  for (std::int64_t i = 0; i < levels; ++i) {
    for (std::int64_t j = 0; j < o.num_res_blocks; ++j, ++block) {
      h = down_blocks_->at<UNetResBlockImpl>(block).forward(h, emb, ctx);
      if (down_has_attn_[block]) h = down_attn_->at<UNetAttentionImpl>(attn++).forward(h);
      skips.push_back(h);
    }
    if (i != levels - 1) {
      h = downsample_->at<nn::Conv2dImpl>(static_cast<std::size_t>(i)).forward(h);
      skips.push_back(h);
    }
  }
  h = mid1_->forward(h, emb, ctx);
  if (mid_attn_) h = mid_attn_->forward(h);
  h = mid2_->forward(h, emb, ctx);
  block = 0;
  attn = 0;
  std::size_t up = 0;
  for (std::int64_t i = levels - 1; i >= 0; --i) {
    for (std::int64_t j = 0; j < o.num_res_blocks + 1; ++j, ++block) {
      h = at::cat({h, skips.back()}, 1);
      skips.pop_back();
      h = up_blocks_->at<UNetResBlockImpl>(block).forward(h, emb, ctx);
      if (up_has_attn_[block]) h = up_attn_->at<UNetAttentionImpl>(attn++).forward(h);
    }
    if (i != 0) {
      h = F::interpolate(h, F::InterpolateFuncOptions()
                                .size(std::vector<std::int64_t>{2 * h.size(2), 2 * h.size(3)})
                                .mode(torch::kNearest));
      h = upsample_->at<nn::Conv2dImpl>(up++).forward(h);
    }
  }
  return conv_out_->forward(torch::silu(norm_out_->forward(h)));
}

double unetTrainingFlopsPerImage(const UNetOptions& o) {
  const double emb = 4.0 * static_cast<double>(o.ch);
  const auto conv = [](double cin, double cout, double k, double side) {
    return cin * cout * k * k * side * side;
  };
  const auto resblock = [&](double in, double out, double side) {
    double m = conv(in, out, 3, side) + emb * out + conv(out, out, 3, side);
    if (in != out) m += conv(in, out, o.conv_shortcut ? 3 : 1, side);
    return m;
  };
  const auto attention = [&](double c, double side) {
    const double n = side * side;
    return 4 * c * c * n + 2 * n * n * c;  // qkv + proj, QK^T and AV
  };
  const auto has_attn = [&](std::int64_t res) {
    return std::find(o.attn_resolutions.begin(), o.attn_resolutions.end(), res) !=
           o.attn_resolutions.end();
  };
  const auto levels = static_cast<std::int64_t>(o.ch_mult.size());
  const double ch = static_cast<double>(o.ch);
  double macs = ch * emb + emb * emb;  // timestep MLP
  std::int64_t res = o.resolution;
  double side = static_cast<double>(res);
  macs += conv(static_cast<double>(o.in_channels), ch, 3, side);
  std::vector<double> skips{ch};
  double channels = ch;
  for (std::int64_t i = 0; i < levels; ++i) {
    const double out = ch * static_cast<double>(o.ch_mult[static_cast<std::size_t>(i)]);
    for (std::int64_t j = 0; j < o.num_res_blocks; ++j) {
      macs += resblock(channels, out, side);
      channels = out;
      if (has_attn(res)) macs += attention(channels, side);
      skips.push_back(channels);
    }
    if (i != levels - 1) {
      res /= 2;
      side = static_cast<double>(res);
      macs += conv(channels, channels, 3, side);
      skips.push_back(channels);
    }
  }
  macs += 2 * resblock(channels, channels, side);
  if (o.mid_attention) macs += attention(channels, side);
  for (std::int64_t i = levels - 1; i >= 0; --i) {
    const double out = ch * static_cast<double>(o.ch_mult[static_cast<std::size_t>(i)]);
    for (std::int64_t j = 0; j < o.num_res_blocks + 1; ++j) {
      macs += resblock(channels + skips.back(), out, side);
      skips.pop_back();
      channels = out;
      if (has_attn(res)) macs += attention(channels, side);
    }
    if (i != 0) {
      res *= 2;
      side = static_cast<double>(res);
      macs += conv(channels, channels, 3, side);
    }
  }
  macs += conv(channels, static_cast<double>(o.outChannels()), 3, side);
  return 2.0 * 3.0 * macs;
}

}  // namespace tessera::models
