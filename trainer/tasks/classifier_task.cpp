#include "trainer/tasks/classifier_task.h"

#include <torch/torch.h>

#include <vector>

#include "core/error.h"
#include "core/keyed_rng.h"
#include "data/batch.h"
#include "data/image_file.h"
#include "data/image_transform.h"
#include "trainer/inference.h"
#include "trainer/task_factory.h"

namespace tessera::trainer {

using config::atLeast;
using config::between;

void ClassifierModelConfig::fields(FieldVisitor& v) {
  v.value("classes", classes, atLeast(2), "number of classes (labels are 0 .. classes-1)");
  v.value("width", width, atLeast(1), "channels of the first stage (the second has twice)");
  v.value("features", features, atLeast(1),
          "width of the penultimate layer: the feature space of sample-quality metrics");
  v.value("dropout", dropout, between(0, 0.95), "dropout on the features while training");
}

void ClassifierConfig::fields(FieldVisitor& v) {
  v.section("model", model, "the classifier network");
}

void ClassifierConfig::validate(const TrainConfig& c) const {
  if (c.data.image_size > 0 && c.data.image_size < 4) {
    throw ConfigError("data.image_size (" + std::to_string(c.data.image_size) +
                      ") must be at least 4 for the classifier's two 2x2 pools");
  }
}

ClassifierTask::ClassifierTask(const ClassifierTaskOptions& options, comm::Communicator& comm)
    : options_(options), updaters_(comm) {
  // LibTorch's initialisers draw from the default CPU generator: seed it from the run's key.
  torch::manual_seed(rngKey(options.seed, RngPurpose::kInit));
  model_ = models::Classifier(options.model);
  model_->to(options.device);
  updaters_.add("model", *model_, options.updater);
}

std::vector<std::pair<std::string, torch::nn::Module*>> ClassifierTask::modules() {
  return {{"model", model_.get()}};
}

StepResult ClassifierTask::step(const data::Batch& batch, const StepContext& ctx) {
  if (!batch.labels.defined()) {
    throw InputError("task: classifier needs a dataset 'labels' in data.train");
  }
  model_->train();
  const at::Tensor x =
      data::modelInput(batch.images.to(options_.device, /*non_blocking=*/true), batch.flips);
  const at::Tensor y = batch.labels.to(options_.device);
  const int n = std::max<int>(1, std::min<int>(options_.grad_accum, static_cast<int>(x.size(0))));
  const auto xs = x.chunk(n, 0);
  const auto ys = y.chunk(n, 0);
  at::Tensor loss_total, correct_total;
  StepResult result;
  result.updates.push_back(updaters_.update("model", ctx, n, [&](int i) {
    const auto k = static_cast<std::size_t>(i);
    const at::Tensor logits = model_->forward(xs[k]).logits;
    const at::Tensor loss = at::cross_entropy_loss(logits, ys[k]);
    const at::Tensor part = loss.detach() / n;
    const at::Tensor acc = (logits.detach().argmax(1) == ys[k]).to(torch::kFloat).mean() / n;
    loss_total = loss_total.defined() ? loss_total + part : part;
    correct_total = correct_total.defined() ? correct_total + acc : acc;
    return loss;
  }));
  result.losses = {{"loss", loss_total}, {"train_accuracy", correct_total}};
  return result;
}

void ClassifierTask::collectState(NamedTensors& tensors,
                                  std::map<std::string, std::int64_t>& ints) const {
  updaters_.collectState(tensors, ints);
}

void ClassifierTask::restoreState(const std::map<std::string, at::Tensor>& tensors,
                                  const std::map<std::string, std::int64_t>& ints) {
  updaters_.restoreState(tensors, ints);
}

double ClassifierTask::trainingFlopsPerImage() const {
  return models::classifierTrainingFlopsPerImage(options_.model, options_.image_size);
}

std::vector<const comm::ReducerStats*> ClassifierTask::commStats() const {
  return updaters_.commStats();
}

std::pair<at::Tensor, at::Tensor> ClassifierTask::featurize(const at::Tensor& images) {
  torch::NoGradGuard no_grad;
  const bool was_training = model_->is_training();
  model_->eval();
  const models::ClassifierOutput out = model_->forward(images.to(options_.device));
  if (was_training) model_->train();
  return {out.features.to(torch::kFloat).cpu(), out.logits.to(torch::kFloat).cpu()};
}

JsonObject ClassifierTask::evaluate(const data::ImageFile& file, models::StatsReducer& reducer,
                                    std::int64_t batch_size, std::int64_t limit) {
  if (!file.hasLabels()) {
    throw InputError("'" + file.path() + "' has no dataset 'labels': the classifier's accuracy " +
                     "needs them");
  }
  const std::int64_t total = limit > 0 ? std::min(limit, file.size()) : file.size();
  const std::int64_t begin = total * reducer.rank() / reducer.size();
  const std::int64_t end = total * (reducer.rank() + 1) / reducer.size();
  // correct, cross-entropy sum, images
  at::Tensor sums = torch::zeros({3}, torch::kDouble);
  for (std::int64_t start = begin; start < end; start += batch_size) {
    const std::int64_t count = std::min(batch_size, end - start);
    const at::Tensor x = readImages(file, start, count);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(count));
    file.readLabels(start, count, labels.data());
    const at::Tensor y = torch::tensor(labels, torch::kLong);
    const at::Tensor logits = featurize(x).second;
    sums[0] += (logits.argmax(1) == y).sum().to(torch::kDouble);
    sums[1] += at::cross_entropy_loss(logits, y, {}, at::Reduction::Sum).to(torch::kDouble);
    sums[2] += count;
  }
  reducer.sumInPlace(sums);
  const double images = sums[2].item<double>();
  JsonObject o;
  o.add("images", static_cast<std::int64_t>(images))
      .add("accuracy", images > 0 ? sums[0].item<double>() / images : 0.0)
      .add("cross_entropy", images > 0 ? sums[1].item<double>() / images : 0.0);
  return o;
}

namespace {

std::unique_ptr<Task> makeClassifierTask(const TrainConfig& c, const TaskEnvironment& env) {
  const ClassifierConfig& own = c.taskConfig<ClassifierConfig>();
  ClassifierTaskOptions o;
  o.model.in_channels = env.image.channels;
  o.model.classes = own.model.classes;
  o.model.width = own.model.width;
  o.model.features = own.model.features;
  o.model.dropout = own.model.dropout;
  o.updater = updaterOptions(c, "model");
  o.grad_accum = c.comm.grad_accum;
  o.seed = static_cast<std::uint64_t>(c.run.seed);
  o.device = env.device;
  o.image_size = env.image.height;
  return std::make_unique<ClassifierTask>(o, *env.grads);
}

}  // namespace

TaskRegistration classifierRegistration() {
  return {"classifier",
          "image classifier on the file's labels (cross-entropy); the feature network of "
          "`tessera eval --features`",
          [] { return std::make_unique<ClassifierConfig>(); },
          {{"model", OptimConfig{}}},
          makeClassifierTask};
}

}  // namespace tessera::trainer
