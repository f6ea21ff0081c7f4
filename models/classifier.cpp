#include "models/classifier.h"

#include <torch/torch.h>

namespace tessera::models {

namespace nn = torch::nn;

ClassifierImpl::ClassifierImpl(const ClassifierOptions& o) : options_(o) {
  const std::int64_t w = o.width;
  auto conv = [](std::int64_t in, std::int64_t out) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1));
  };
  trunk_ =
      register_module("trunk", nn::Sequential(conv(o.in_channels, w), nn::ReLU(), conv(w, w),
                                              nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(2)),
                                              conv(w, 2 * w), nn::ReLU(), conv(2 * w, 2 * w),
                                              nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(2))));
  feature_ = register_module("feature", nn::Linear(2 * w * 49, o.features));
  head_ = register_module("head", nn::Linear(o.features, o.classes));
}

ClassifierOutput ClassifierImpl::forward(const at::Tensor& images) {
  at::Tensor h = trunk_->forward(images);
  // A 7x7 grid whatever the image size (as is for 28x28 images; 8x8 averaged for 32x32).
  h = torch::adaptive_avg_pool2d(h, {7, 7}).flatten(1);
  ClassifierOutput out;
  out.features = torch::relu(feature_->forward(h));
  at::Tensor f = out.features;
  if (options_.dropout > 0 && is_training()) f = torch::dropout(f, options_.dropout, true);
  out.logits = head_->forward(f);
  return out;
}

double classifierTrainingFlopsPerImage(const ClassifierOptions& o, std::int64_t image_size) {
  const double w = static_cast<double>(o.width);
  const double s1 = static_cast<double>(image_size * image_size);
  const double s2 = s1 / 4;
  double macs = s1 * 9 * (o.in_channels * w + w * w) + s2 * 9 * (w * 2 * w + 4 * w * w);
  macs += 2 * w * 49 * o.features + o.features * o.classes;
  return 3 * 2 * macs;
}

}  // namespace tessera::models
