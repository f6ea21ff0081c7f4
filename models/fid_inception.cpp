#include "models/fid_inception.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "core/error.h"
#include "models/safetensors_reader.h"

namespace tessera::models {
namespace nn = torch::nn;

namespace {

constexpr std::int64_t kChunk = 50;  // images per forward pass in features()

// Convolution without bias, BatchNorm with eps 1e-3 (TensorFlow's), ReLU.
class BasicConvImpl : public nn::Module {
 public:
  BasicConvImpl(std::int64_t in, std::int64_t out, torch::ExpandingArray<2> kernel,
                torch::ExpandingArray<2> stride = 1, torch::ExpandingArray<2> padding = 0) {
    conv_ = register_module(
        "conv",
        nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false)));
    bn_ = register_module("bn", nn::BatchNorm2d(nn::BatchNorm2dOptions(out).eps(1e-3)));
  }
  at::Tensor forward(const at::Tensor& x) { return torch::relu(bn_->forward(conv_->forward(x))); }

 private:
  nn::Conv2d conv_{nullptr};
  nn::BatchNorm2d bn_{nullptr};
};
TORCH_MODULE(BasicConv);

// A block's branches are BasicConvs registered under the state dict's names.
class BlockBase : public nn::Module {
 protected:
  BasicConv conv(const std::string& name, std::int64_t in, std::int64_t out,
                 torch::ExpandingArray<2> kernel, torch::ExpandingArray<2> stride = 1,
                 torch::ExpandingArray<2> padding = 0) {
    return register_module(name, BasicConv(in, out, kernel, stride, padding));
  }
};

// 3x3 average pool, stride 1, padding 1, averaging only the pixels inside the image.
at::Tensor averagePoolInside(const at::Tensor& x) {
  return torch::avg_pool2d(x, 3, 1, 1, /*ceil_mode=*/false, /*count_include_pad=*/false);
}

// Mixed_5b..5d: 64 + 64 + 96 + pool_features channels.
class BlockAImpl : public BlockBase {
 public:
  BlockAImpl(std::int64_t in, std::int64_t pool_features) {
    b1x1_ = conv("branch1x1", in, 64, 1);
    b5x5_1_ = conv("branch5x5_1", in, 48, 1);
    b5x5_2_ = conv("branch5x5_2", 48, 64, 5, 1, 2);
    b3x3dbl_1_ = conv("branch3x3dbl_1", in, 64, 1);
    b3x3dbl_2_ = conv("branch3x3dbl_2", 64, 96, 3, 1, 1);
    b3x3dbl_3_ = conv("branch3x3dbl_3", 96, 96, 3, 1, 1);
    pool_ = conv("branch_pool", in, pool_features, 1);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b1x1_->forward(x), b5x5_2_->forward(b5x5_1_->forward(x)),
                       b3x3dbl_3_->forward(b3x3dbl_2_->forward(b3x3dbl_1_->forward(x))),
                       pool_->forward(averagePoolInside(x))},
                      1);
  }

 private:
  BasicConv b1x1_{nullptr}, b5x5_1_{nullptr}, b5x5_2_{nullptr}, b3x3dbl_1_{nullptr},
      b3x3dbl_2_{nullptr}, b3x3dbl_3_{nullptr}, pool_{nullptr};
};
TORCH_MODULE(BlockA);

// Mixed_6a, the grid reduction 35 -> 17: 384 + 96 + in channels.
class BlockBImpl : public BlockBase {
 public:
  explicit BlockBImpl(std::int64_t in) {
    b3x3_ = conv("branch3x3", in, 384, 3, 2);
    b3x3dbl_1_ = conv("branch3x3dbl_1", in, 64, 1);
    b3x3dbl_2_ = conv("branch3x3dbl_2", 64, 96, 3, 1, 1);
    b3x3dbl_3_ = conv("branch3x3dbl_3", 96, 96, 3, 2);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat(
        {b3x3_->forward(x), b3x3dbl_3_->forward(b3x3dbl_2_->forward(b3x3dbl_1_->forward(x))),
         torch::max_pool2d(x, 3, 2)},
        1);
  }

 private:
  BasicConv b3x3_{nullptr}, b3x3dbl_1_{nullptr}, b3x3dbl_2_{nullptr}, b3x3dbl_3_{nullptr};
};
TORCH_MODULE(BlockB);

// Mixed_6b..6e, factorised 7x7 convolutions: 4 x 192 channels.
class BlockCImpl : public BlockBase {
 public:
  BlockCImpl(std::int64_t in, std::int64_t c7) {
    b1x1_ = conv("branch1x1", in, 192, 1);
    b7x7_.push_back(conv("branch7x7_1", in, c7, 1));
    b7x7_.push_back(conv("branch7x7_2", c7, c7, {1, 7}, 1, {0, 3}));
    b7x7_.push_back(conv("branch7x7_3", c7, 192, {7, 1}, 1, {3, 0}));
    b7x7dbl_.push_back(conv("branch7x7dbl_1", in, c7, 1));
    b7x7dbl_.push_back(conv("branch7x7dbl_2", c7, c7, {7, 1}, 1, {3, 0}));
    b7x7dbl_.push_back(conv("branch7x7dbl_3", c7, c7, {1, 7}, 1, {0, 3}));
    b7x7dbl_.push_back(conv("branch7x7dbl_4", c7, c7, {7, 1}, 1, {3, 0}));
    b7x7dbl_.push_back(conv("branch7x7dbl_5", c7, 192, {1, 7}, 1, {0, 3}));
    pool_ = conv("branch_pool", in, 192, 1);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b1x1_->forward(x), chain(b7x7_, x), chain(b7x7dbl_, x),
                       pool_->forward(averagePoolInside(x))},
                      1);
  }

 private:
  static at::Tensor chain(std::vector<BasicConv>& convs, at::Tensor x) {
    for (auto& c : convs) x = c->forward(x);
    return x;
  }
  BasicConv b1x1_{nullptr}, pool_{nullptr};
  std::vector<BasicConv> b7x7_, b7x7dbl_;
};
TORCH_MODULE(BlockC);

// Mixed_7a, the grid reduction 17 -> 8: 320 + 192 + in channels.
class BlockDImpl : public BlockBase {
 public:
  explicit BlockDImpl(std::int64_t in) {
    b3x3_1_ = conv("branch3x3_1", in, 192, 1);
    b3x3_2_ = conv("branch3x3_2", 192, 320, 3, 2);
    b7x7x3_1_ = conv("branch7x7x3_1", in, 192, 1);
    b7x7x3_2_ = conv("branch7x7x3_2", 192, 192, {1, 7}, 1, {0, 3});
    b7x7x3_3_ = conv("branch7x7x3_3", 192, 192, {7, 1}, 1, {3, 0});
    b7x7x3_4_ = conv("branch7x7x3_4", 192, 192, 3, 2);
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor b7 =
        b7x7x3_4_->forward(b7x7x3_3_->forward(b7x7x3_2_->forward(b7x7x3_1_->forward(x))));
    return torch::cat({b3x3_2_->forward(b3x3_1_->forward(x)), b7, torch::max_pool2d(x, 3, 2)}, 1);
  }

 private:
  BasicConv b3x3_1_{nullptr}, b3x3_2_{nullptr}, b7x7x3_1_{nullptr}, b7x7x3_2_{nullptr},
      b7x7x3_3_{nullptr}, b7x7x3_4_{nullptr};
};
TORCH_MODULE(BlockD);

// Mixed_7b (E_1: average pool inside the image) and Mixed_7c (E_2: max pool), expanded filter
// banks: 320 + 768 + 768 + 192 = 2048 channels.
class BlockEImpl : public BlockBase {
 public:
  BlockEImpl(std::int64_t in, bool max_pool) : max_pool_(max_pool) {
    b1x1_ = conv("branch1x1", in, 320, 1);
    b3x3_1_ = conv("branch3x3_1", in, 384, 1);
    b3x3_2a_ = conv("branch3x3_2a", 384, 384, {1, 3}, 1, {0, 1});
    b3x3_2b_ = conv("branch3x3_2b", 384, 384, {3, 1}, 1, {1, 0});
    b3x3dbl_1_ = conv("branch3x3dbl_1", in, 448, 1);
    b3x3dbl_2_ = conv("branch3x3dbl_2", 448, 384, 3, 1, 1);
    b3x3dbl_3a_ = conv("branch3x3dbl_3a", 384, 384, {1, 3}, 1, {0, 1});
    b3x3dbl_3b_ = conv("branch3x3dbl_3b", 384, 384, {3, 1}, 1, {1, 0});
    pool_ = conv("branch_pool", in, 192, 1);
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h3 = b3x3_1_->forward(x);
    const at::Tensor hd = b3x3dbl_2_->forward(b3x3dbl_1_->forward(x));
    const at::Tensor pooled = max_pool_ ? torch::max_pool2d(x, 3, 1, 1) : averagePoolInside(x);
    return torch::cat({b1x1_->forward(x), b3x3_2a_->forward(h3), b3x3_2b_->forward(h3),
                       b3x3dbl_3a_->forward(hd), b3x3dbl_3b_->forward(hd), pool_->forward(pooled)},
                      1);
  }

 private:
  bool max_pool_;
  BasicConv b1x1_{nullptr}, b3x3_1_{nullptr}, b3x3_2a_{nullptr}, b3x3_2b_{nullptr},
      b3x3dbl_1_{nullptr}, b3x3dbl_2_{nullptr}, b3x3dbl_3a_{nullptr}, b3x3dbl_3b_{nullptr},
      pool_{nullptr};
};
TORCH_MODULE(BlockE);

// The network from the 299x299 input to the pool3 features [N, 2048].
class NetworkImpl : public nn::Module {
 public:
  NetworkImpl() {
    stem_.push_back(register_module("Conv2d_1a_3x3", BasicConv(3, 32, 3, 2)));
    stem_.push_back(register_module("Conv2d_2a_3x3", BasicConv(32, 32, 3)));
    stem_.push_back(register_module("Conv2d_2b_3x3", BasicConv(32, 64, 3, 1, 1)));
    stem2_.push_back(register_module("Conv2d_3b_1x1", BasicConv(64, 80, 1)));
    stem2_.push_back(register_module("Conv2d_4a_3x3", BasicConv(80, 192, 3)));
    mixed_5_.push_back(register_module("Mixed_5b", BlockA(192, 32)));
    mixed_5_.push_back(register_module("Mixed_5c", BlockA(256, 64)));
    mixed_5_.push_back(register_module("Mixed_5d", BlockA(288, 64)));
    mixed_6a_ = register_module("Mixed_6a", BlockB(288));
    mixed_6_.push_back(register_module("Mixed_6b", BlockC(768, 128)));
    mixed_6_.push_back(register_module("Mixed_6c", BlockC(768, 160)));
    mixed_6_.push_back(register_module("Mixed_6d", BlockC(768, 160)));
    mixed_6_.push_back(register_module("Mixed_6e", BlockC(768, 192)));
    mixed_7a_ = register_module("Mixed_7a", BlockD(768));
    mixed_7_.push_back(register_module("Mixed_7b", BlockE(1280, /*max_pool=*/false)));
    mixed_7_.push_back(register_module("Mixed_7c", BlockE(2048, /*max_pool=*/true)));
  }

  at::Tensor forward(at::Tensor x) {
    for (auto& c : stem_) x = c->forward(x);
    x = torch::max_pool2d(x, 3, 2);
    for (auto& c : stem2_) x = c->forward(x);
    x = torch::max_pool2d(x, 3, 2);
    for (auto& b : mixed_5_) x = b->forward(x);
    x = mixed_6a_->forward(x);
    for (auto& b : mixed_6_) x = b->forward(x);
    x = mixed_7a_->forward(x);
    for (auto& b : mixed_7_) x = b->forward(x);
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  }

 private:
  std::vector<BasicConv> stem_, stem2_;
  std::vector<BlockA> mixed_5_;
  BlockB mixed_6a_{nullptr};
  std::vector<BlockC> mixed_6_;
  BlockD mixed_7a_{nullptr};
  std::vector<BlockE> mixed_7_;
};
TORCH_MODULE(Network);

std::string shapeText(at::IntArrayRef s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

bool endsWith(const std::string& name, const std::string& suffix) {
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A 64-bit hash over 64-bit words: each word is xored in and the state mixed with SplitMix64's
// finaliser. Byte order is fixed (little-endian words), so the value is platform independent on
// the little-endian machines LibTorch supports.
class WordHash {
 public:
  void add(std::uint64_t word) {
    std::uint64_t z = state_ ^ word;
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    state_ = z ^ (z >> 31);
  }
  void add(const void* data, std::size_t bytes) {
    add(static_cast<std::uint64_t>(bytes));
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < bytes; i += 8) {
      std::uint64_t word = 0;
      std::memcpy(&word, p + i, std::min<std::size_t>(8, bytes - i));
      add(word);
    }
  }
  void add(const std::string& text) { add(text.data(), text.size()); }
  std::string hex() const {
    static const char* digits = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 0; i < 16; ++i) out[15 - i] = digits[(state_ >> (4 * i)) & 0xf];
    return out;
  }

 private:
  std::uint64_t state_ = 0;
};

}  // namespace

struct FidInception::Impl {
  Network net;
  c10::Device device{c10::kCPU};
  std::string fingerprint;
};

FidInception::FidInception(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

FidInception FidInception::load(const std::string& path, c10::Device device) {
  const SafetensorsContents file = readSafetensors(path);
  const std::string where = "FID Inception weights " + path;
  const auto format = file.metadata.find("format");
  if (format == file.metadata.end() || format->second != kFidInceptionFormat) {
    throw InputError(where + ": not an FID Inception weights file (metadata \"format\" must be \"" +
                     kFidInceptionFormat +
                     "\"; write it with launch/convert_fid_inception_weights.py)");
  }
  const std::map<std::string, at::Tensor> tensors(file.tensors.begin(), file.tensors.end());

  auto impl = std::make_shared<Impl>();
  impl->net = Network();
  torch::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> targets;  // every parameter and statistic, by name
  for (auto& item : impl->net->named_parameters()) targets[item.key()] = item.value();
  for (auto& item : impl->net->named_buffers()) {
    if (!endsWith(item.key(), "num_batches_tracked")) targets[item.key()] = item.value();
  }
  WordHash hash;
  hash.add(std::string{kFidInceptionFormat});
  for (auto& [name, target] : targets) {  // name order
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw InputError(where + ": tensor '" + name + "' is missing");
    const at::Tensor& t = it->second;
    if (t.sizes() != target.sizes()) {
      throw InputError(where + ": tensor '" + name + "' has shape " + shapeText(t.sizes()) +
                       ", expected " + shapeText(target.sizes()));
    }
    if (!at::isFloatingType(t.scalar_type())) {
      throw InputError(where + ": tensor '" + name + "' is not floating point");
    }
    const at::Tensor value = t.to(at::kFloat).contiguous();
    if (!value.isfinite().all().item<bool>()) {
      throw InputError(where + ": tensor '" + name + "' has non-finite values");
    }
    if (endsWith(name, "running_var") && (value < 0).any().item<bool>()) {
      throw InputError(where + ": tensor '" + name + "' has negative variances");
    }
    target.copy_(value);
    hash.add(name);
    for (const std::int64_t d : value.sizes()) hash.add(static_cast<std::uint64_t>(d));
    hash.add(value.data_ptr(), value.nbytes());
  }
  for (const auto& [name, t] : tensors) {
    if (!targets.count(name)) throw InputError(where + ": unexpected tensor '" + name + "'");
  }
  for (auto& p : impl->net->parameters()) p.set_requires_grad(false);
  impl->net->eval();
  impl->net->to(device);
  impl->device = device;
  impl->fingerprint = hash.hex();
  return FidInception(std::move(impl));
}

at::Tensor FidInception::features(const at::Tensor& images) {
  if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3) ||
      !at::isFloatingType(images.scalar_type())) {
    throw InputError("FID Inception: expected floating point images [N, 3 or 1, H, W], got " +
                     std::string{c10::toString(images.scalar_type())} + " " +
                     shapeText(images.sizes()));
  }
  torch::NoGradGuard no_grad;
  const std::int64_t n = images.size(0);
  std::vector<at::Tensor> out;
  for (std::int64_t begin = 0; begin < n; begin += kChunk) {
    at::Tensor x =
        images.slice(0, begin, std::min(n, begin + kChunk)).to(impl_->device, at::kFloat);
    if (x.size(2) != kFidInceptionSide || x.size(3) != kFidInceptionSide) {
      x = nn::functional::interpolate(
          x, nn::functional::InterpolateFuncOptions()
                 .size(std::vector<std::int64_t>{kFidInceptionSide, kFidInceptionSide})
                 .mode(torch::kBilinear)
                 .align_corners(false));
    }
    if (x.size(1) == 1) x = x.expand({-1, 3, -1, -1});
    out.push_back(impl_->net->forward(x.contiguous()).to(at::kCPU));
  }
  if (out.empty()) return torch::zeros({0, kFidInceptionFeatures}, at::kFloat);
  return torch::cat(out, 0);
}

std::string FidInception::fingerprint() const {
  return impl_->fingerprint;
}

}  // namespace tessera::models
