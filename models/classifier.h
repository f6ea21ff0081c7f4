// A small convolutional image classifier (issue 15). Trained by `task: classifier` on a file's
// `labels`; its penultimate activations are the feature space of Tessera's Fréchet distance for
// Fashion-MNIST ("FD-fmnist"), and its softmax gives the Inception-Score-style score.
// Two stages of two 3x3 convolutions (ReLU) and a 2x2 max pool, a 7x7 grid flattened, a
// fully connected feature layer (ReLU) and the logits.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace tessera::models {

struct ClassifierOptions {
  std::int64_t in_channels = 1;
  std::int64_t classes = 10;
  std::int64_t width = 32;      // channels of the first stage; the second has 2 x width
  std::int64_t features = 128;  // the penultimate (feature) layer
  double dropout = 0;           // before the logits, in training mode only
};

struct ClassifierOutput {
  at::Tensor features;  // [B, features], after the ReLU
  at::Tensor logits;    // [B, classes]
};

class ClassifierImpl : public torch::nn::Module {
 public:
  explicit ClassifierImpl(const ClassifierOptions& options);

  // `images`: [B, C, H, W] in [-1, 1].
  ClassifierOutput forward(const at::Tensor& images);
  const ClassifierOptions& options() const { return options_; }

 private:
  ClassifierOptions options_;
  torch::nn::Sequential trunk_{nullptr};
  torch::nn::Linear feature_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(Classifier);

// Model FLOPs of one training step per image (3 x 2 x multiply-adds of the forward pass).
double classifierTrainingFlopsPerImage(const ClassifierOptions& options, std::int64_t image_size);

}  // namespace tessera::models
