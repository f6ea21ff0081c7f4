#include "trainer/model_updater.h"

#include <torch/torch.h>

#include "comm/communicator.h"
#include "core/error.h"
#include "trainer/optim/grad_norm.h"

#include <cmath>
#include <stdexcept>

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
  if (!options_.ema.empty()) {
    ema_.emplace(namedTrainable(module), options_.ema);
    ema_->setWarmup(options_.ema_warmup);
  }
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
  std::vector<at::Tensor> grads;
  for (const auto& p : params_) grads.push_back(p.grad());
  grad_norm_tensor_ = globalNorm(grads);
}

void ModelUpdater::apply(double lr) {
  if (options_.clip_grad_norm > 0) {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> grads;
    for (const auto& p : params_) grads.push_back(p.grad());
    clipByGlobalNorm(grads, options_.clip_grad_norm, grad_norm_tensor_);
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

Updaters::Frozen::Frozen(const Updaters& set, const std::string& keep) {
  for (const auto& u : set.updaters_) {
    if (u->name() == keep) continue;
    for (const at::Tensor& p : u->parameters()) {
      if (!p.requires_grad()) continue;
      at::Tensor(p).requires_grad_(false);
      frozen_.push_back(p);
    }
  }
}

Updaters::Frozen::~Frozen() {
  for (at::Tensor& p : frozen_) p.requires_grad_(true);
}

ModelUpdater& Updaters::add(const std::string& name, torch::nn::Module& module,
                            UpdaterOptions options) {
  for (const auto& u : updaters_) {
    if (u->name() == name) throw std::logic_error("Updaters: '" + name + "' added twice");
  }
  updaters_.push_back(std::make_unique<ModelUpdater>(name, module, comm_, std::move(options)));
  return *updaters_.back();
}

ModelUpdater& Updaters::operator[](const std::string& name) {
  for (const auto& u : updaters_) {
    if (u->name() == name) return *u;
  }
  throw std::logic_error("Updaters: no optimizer '" + name + "'");
}

OptimizerOutcome Updaters::update(const std::string& name, const StepContext& ctx,
                                  int micro_batches, const std::function<at::Tensor(int)>& loss) {
  ModelUpdater& u = (*this)[name];
  OptimizerOutcome out;
  out.name = name;
  out.lr = ctx.lr(name);
  const int n = std::max(1, micro_batches);
  at::Tensor total;
  {
    Frozen freeze(*this, name);
    u.zeroGrad();
    for (int i = 0; i < n; ++i) {
      u.prepareBackward(i == n - 1, ctx.step);
      const at::Tensor l = loss(i);
      (l * (u.lossScale() / n)).backward();
      const at::Tensor value = l.detach().to(at::kDouble);
      total = total.defined() ? total + value : value;
    }
    u.finishBackward();
  }
  // The one host read of the update: the mean loss and the gradient norm, together.
  const at::Tensor host =
      at::stack({total / n, u.gradNormTensor().detach().to(at::kDouble).to(total.device())}).cpu();
  const double mean_loss = host[0].item<double>();
  out.grad_norm = host[1].item<double>();
  u.setGradNorm(out.grad_norm);
  const bool ok = std::isfinite(mean_loss) && std::isfinite(out.grad_norm);
  out.applied = ctx.agree_finite ? ctx.agree_finite(ok) : ok;
  if (out.applied) u.apply(out.lr);
  return out;
}

void Updaters::average(std::vector<at::Tensor>& tensors, const std::string& what,
                       std::int64_t step) {
  comm::GradReducer::checkIdle(comm_, "averaging " + what);
  if (comm_.size() == 1 || tensors.empty()) return;
  comm_.allReduce(tensors, comm::ReduceOp::kAverage, {"allreduce", what, step, -1});
}

void Updaters::collectState(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                            std::map<std::string, std::int64_t>& ints) const {
  for (const auto& u : updaters_) u->collectState(tensors, ints);
}

void Updaters::restoreState(const std::map<std::string, at::Tensor>& tensors,
                            const std::map<std::string, std::int64_t>& ints) {
  for (const auto& u : updaters_) u->restoreState(tensors, ints);
}

std::vector<const comm::ReducerStats*> Updaters::commStats() const {
  std::vector<const comm::ReducerStats*> out;
  for (const auto& u : updaters_) out.push_back(&u->commStats());
  return out;
}

}  // namespace tessera::trainer
