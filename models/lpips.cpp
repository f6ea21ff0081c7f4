#include "models/lpips.h"

#include <torch/torch.h>

#include <map>
#include <set>

#include "core/error.h"
#include "models/safetensors_reader.h"

namespace tessera::models {
namespace nn = torch::nn;

namespace {

// Output channels of each VGG16 block's convolutions.
const std::vector<std::vector<std::int64_t>>& vggBlocks() {
  static const std::vector<std::vector<std::int64_t>> blocks{
      {64, 64}, {128, 128}, {256, 256, 256}, {512, 512, 512}, {512, 512, 512}};
  return blocks;
}

std::string shapeText(at::IntArrayRef s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

}  // namespace

Vgg16FeaturesImpl::Vgg16FeaturesImpl() {
  std::int64_t in = 3;
  for (std::size_t b = 0; b < vggBlocks().size(); ++b) {
    blocks_.emplace_back();
    for (std::size_t i = 0; i < vggBlocks()[b].size(); ++i) {
      const std::int64_t out = vggBlocks()[b][i];
      const std::string name = "conv" + std::to_string(b + 1) + "_" + std::to_string(i + 1);
      blocks_.back().push_back(
          register_module(name, nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1))));
      in = out;
    }
  }
}

const std::vector<std::int64_t>& Vgg16FeaturesImpl::tapChannels() {
  static const std::vector<std::int64_t> channels{64, 128, 256, 512, 512};
  return channels;
}

std::vector<at::Tensor> Vgg16FeaturesImpl::forward(const at::Tensor& x) {
  std::vector<at::Tensor> taps;
  at::Tensor h = x;
  for (std::size_t b = 0; b < blocks_.size(); ++b) {
    if (b > 0) h = torch::max_pool2d(h, 2, 2);
    for (auto& conv : blocks_[b]) h = torch::relu(conv->forward(h));
    taps.push_back(h);
  }
  return taps;
}

LpipsImpl::LpipsImpl() {
  trunk_ = register_module("trunk", Vgg16Features());
  for (std::size_t l = 0; l < Vgg16FeaturesImpl::tapChannels().size(); ++l) {
    const std::int64_t c = Vgg16FeaturesImpl::tapChannels()[l];
    lins_.push_back(register_module("lin" + std::to_string(l),
                                    nn::Conv2d(nn::Conv2dOptions(c, 1, 1).bias(false))));
  }
  freeze();
}

LpipsImpl::LpipsImpl(const std::string& path) : LpipsImpl() {
  load(path);
}

void LpipsImpl::freeze() {
  for (auto& p : parameters()) p.set_requires_grad(false);
  eval();
}

void LpipsImpl::load(const std::string& path) {
  const SafetensorsContents file = readSafetensors(path);
  const std::string where = "LPIPS weights " + path;
  const auto format = file.metadata.find("format");
  if (format == file.metadata.end() || format->second != kLpipsFormat) {
    throw InputError(where + ": not an LPIPS weights file (metadata \"format\" must be \"" +
                     kLpipsFormat + "\"; write it with launch/convert_lpips_weights.py)");
  }
  std::map<std::string, at::Tensor> tensors(file.tensors.begin(), file.tensors.end());
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& param = item.value();
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw InputError(where + ": tensor '" + name + "' is missing");
    const at::Tensor& t = it->second;
    if (t.sizes() != param.sizes()) {
      throw InputError(where + ": tensor '" + name + "' has shape " + shapeText(t.sizes()) +
                       ", expected " + shapeText(param.sizes()));
    }
    if (!at::isFloatingType(t.scalar_type())) {
      throw InputError(where + ": tensor '" + name + "' is not floating point");
    }
    if (name.rfind("lin", 0) == 0 && (t < 0).any().item<bool>()) {
      throw InputError(where + ": linear head '" + name + "' has negative weights");
    }
    param.copy_(t);
    used.insert(name);
  }
  for (const auto& [name, t] : tensors) {
    if (!used.count(name)) throw InputError(where + ": unexpected tensor '" + name + "'");
  }
}

at::Tensor LpipsImpl::scale(const at::Tensor& images) const {
  TORCH_CHECK(images.dim() == 4 && (images.size(1) == 3 || images.size(1) == 1),
              "LPIPS: expected images [B, 3 or 1, H, W], got ", images.sizes());
  // Per channel with host scalars: exact in any dtype, and no tensor to move to the device.
  static constexpr double kShift[3] = {-0.030, -0.088, -0.188};
  static constexpr double kScale[3] = {0.458, 0.448, 0.450};
  std::vector<at::Tensor> channels;
  for (std::int64_t c = 0; c < 3; ++c) {
    const at::Tensor channel = images.select(1, images.size(1) == 1 ? 0 : c);
    channels.push_back((channel - kShift[c]) / kScale[c]);
  }
  return at::stack(channels, 1);
}

at::Tensor LpipsImpl::forward(const at::Tensor& x, const at::Tensor& y) {
  TORCH_CHECK(x.sizes() == y.sizes(), "LPIPS: the images differ in shape: ", x.sizes(), " and ",
              y.sizes());
  const std::int64_t b = x.size(0);
  // Both images through the trunk in one batch.
  const std::vector<at::Tensor> taps = trunk_->forward(at::cat({scale(x), scale(y)}, 0));
  at::Tensor total;
  for (std::size_t l = 0; l < taps.size(); ++l) {
    // |f| + 1e-10, as sqrt(sum f^2 + 1e-20) + 1e-10: the same value wherever sum f^2 exceeds
    // ~1e-13, and a finite gradient where a position's features are all zero.
    const at::Tensor unit =
        taps[l] / ((taps[l].pow(2).sum(1, /*keepdim=*/true) + 1e-20).sqrt() + 1e-10);
    const at::Tensor diff = (unit.slice(0, 0, b) - unit.slice(0, b, 2 * b)).pow(2);
    const at::Tensor layer = lins_[l]->forward(diff).mean({1, 2, 3});  // [B]
    total = total.defined() ? total + layer : layer;
  }
  return total;
}

}  // namespace tessera::models
