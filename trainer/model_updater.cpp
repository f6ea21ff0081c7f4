#include "trainer/model_updater.h"

#include <torch/torch.h>

#include "core/error.h"

namespace tessera::trainer {
namespace {

std::vector<at::Tensor> trainable(torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (auto& p : module.parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> namedTrainable(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& item : module.named_parameters()) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

}  // namespace

ModelUpdater::ModelUpdater(std::string name, torch::nn::Module& module, comm::Communicator& comm,
                           UpdaterOptions options)
    : name_(std::move(name)),
      params_(trainable(module)),
      options_(std::move(options)),
      adam_(params_, options_.adam) {
  options_.reducer.name = "grads[" + name_ + "]";
  reducer_ = std::make_unique<comm::GradReducer>(comm, params_, options_.reducer);
  if (!options_.ema.empty()) ema_.emplace(namedTrainable(module), options_.ema);
}

void ModelUpdater::zeroGrad() {
  reducer_->zeroGrad();
}

void ModelUpdater::prepareBackward(bool last_micro_batch, std::int64_t step) {
  reducer_->prepare(last_micro_batch, step);
}

void ModelUpdater::finishBackward() {
  reducer_->finish();
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const auto& p : params_) {
    if (p.grad().defined()) norms.push_back(p.grad().to(at::kFloat).pow(2).sum());
  }
  grad_norm_ = norms.empty() ? 0.0 : std::sqrt(at::stack(norms).sum().item<double>());
}

void ModelUpdater::apply(double lr) {
  if (options_.clip_grad_norm > 0) {
    // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
    const double coef = options_.clip_grad_norm / (grad_norm_ + 1e-6);
    if (coef < 1) {
      torch::NoGradGuard no_grad;
      for (auto& p : params_) {
        if (p.grad().defined()) p.grad().mul_(coef);
      }
    }
  }
  adam_.step(lr);
  if (ema_) ema_->update();
}

void ModelUpdater::collectState(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                std::map<std::string, std::int64_t>& ints) const {
  for (auto& [key, t] : adam_.state()) tensors.emplace_back("optim/" + name_ + "/" + key, t);
  ints["optim/" + name_ + "/steps"] = adam_.steps();
  if (ema_) {
    for (auto& [key, t] : ema_->state()) tensors.emplace_back("ema/" + name_ + "/" + key, t);
    ints["ema/" + name_ + "/updates"] = ema_->updates();
  }
}

void ModelUpdater::restoreState(const std::map<std::string, at::Tensor>& tensors,
                                const std::map<std::string, std::int64_t>& ints) {
  auto pick = [&](const std::string& prefix) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [key, t] : tensors) {
      if (key.compare(0, prefix.size(), prefix) == 0)
        out.emplace_back(key.substr(prefix.size()), t);
    }
    return out;
  };
  auto count = [&](const std::string& key) {
    auto it = ints.find(key);
    if (it == ints.end()) throw InputError("checkpoint has no '" + key + "'");
    return it->second;
  };
  adam_.loadState(pick("optim/" + name_ + "/"), count("optim/" + name_ + "/steps"));
  if (ema_) ema_->loadState(pick("ema/" + name_ + "/"), count("ema/" + name_ + "/updates"));
}

}  // namespace tessera::trainer
