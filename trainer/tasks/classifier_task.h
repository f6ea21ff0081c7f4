// Training an image classifier on a file's `labels` (issue 15): cross-entropy, gradients
// averaged over ranks. The trained classifier is the feature network of `tessera eval
// --features CHECKPOINT`: its penultimate activations for Fréchet distance and precision/recall,
// its softmax for the Inception-Score-style score.
#pragma once

#include <c10/core/Device.h>

#include <memory>

#include "models/classifier.h"
#include "trainer/model_updater.h"
#include "trainer/task.h"
#include "trainer/task_registry.h"
#include "trainer/train_config.h"

namespace tessera::trainer {

// `model` section of `task: classifier`.
struct ClassifierModelConfig {
  int classes = 10;
  int width = 32;
  int features = 128;
  double dropout = 0;
  void fields(FieldVisitor& v);
};

struct ClassifierConfig final : TaskConfig {
  ClassifierModelConfig model;
  std::unique_ptr<TaskConfig> clone() const override {
    return std::make_unique<ClassifierConfig>(*this);
  }
  void fields(FieldVisitor& v) override;
  void validate(const TrainConfig& config) const override;
};

struct ClassifierTaskOptions {
  models::ClassifierOptions model;
  UpdaterOptions updater;
  int grad_accum = 1;
  std::uint64_t seed = 0;
  c10::Device device = c10::Device(c10::kCPU);
  std::int64_t image_size = 28;
};

class ClassifierTask final : public Task {
 public:
  ClassifierTask(const ClassifierTaskOptions& options, comm::Communicator& comm);

  std::string name() const override { return "classifier"; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override;
  StepResult step(const data::Batch& batch, const StepContext& ctx) override;
  void collectState(NamedTensors& tensors,
                    std::map<std::string, std::int64_t>& ints) const override;
  void restoreState(const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, std::int64_t>& ints) override;
  double trainingFlopsPerImage() const override;
  std::vector<const comm::ReducerStats*> commStats() const override;
  // Accuracy and cross-entropy on a labelled file.
  JsonObject evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                      std::int64_t batch_size, std::int64_t limit) override;
  // Penultimate features [N, features] and logits [N, classes] of `images` ([N, C, H, W] in
  // [-1, 1]), float32 on the CPU, computed in evaluation mode.
  std::pair<at::Tensor, at::Tensor> featurize(const at::Tensor& images) override;

  models::Classifier& model() { return model_; }

 private:
  ClassifierTaskOptions options_;
  models::Classifier model_{nullptr};
  Updaters updaters_;
};

TaskRegistration classifierRegistration();

}  // namespace tessera::trainer
