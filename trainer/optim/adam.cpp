#include "trainer/optim/adam.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <map>

#include "core/error.h"

namespace tessera::trainer {

Adam::Adam(std::vector<at::Tensor> params, AdamOptions options)
    : params_(std::move(params)), options_(options) {
  for (const auto& p : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
  }
}

void Adam::step(double lr) {
  c10::NoGradGuard no_grad;
  ++steps_;
  multi_tensor::AdamStep s;
  s.lr = lr;
  s.beta1 = options_.beta1;
  s.beta2 = options_.beta2;
  s.eps = options_.eps;
  s.weight_decay = options_.weight_decay;
  s.decoupled_weight_decay = options_.decoupled_weight_decay;
  s.bias2_sqrt = std::sqrt(1 - std::pow(options_.beta2, static_cast<double>(steps_)));
  s.step_size = lr / (1 - std::pow(options_.beta1, static_cast<double>(steps_)));
  std::vector<at::Tensor> p, g, m, v;
  p.reserve(params_.size());
  g.reserve(params_.size());
  m.reserve(params_.size());
  v.reserve(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& grad = params_[i].grad();
    if (!grad.defined()) continue;
    p.push_back(params_[i]);
    g.push_back(grad);
    m.push_back(exp_avg_[i]);
    v.push_back(exp_avg_sq_[i]);
  }
  multi_tensor::adam(options_.kernel, p, g, m, v, s);
}

std::vector<std::pair<std::string, at::Tensor>> Adam::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(std::to_string(i) + "/exp_avg", exp_avg_[i]);
    out.emplace_back(std::to_string(i) + "/exp_avg_sq", exp_avg_sq_[i]);
  }
  return out;
}

void Adam::loadState(const std::vector<std::pair<std::string, at::Tensor>>& state,
                     std::int64_t steps) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  c10::NoGradGuard no_grad;
  for (auto& [name, mine] : this->state()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw InputError("optimizer state has no entry '" + name + "'");
    if (it->second.sizes() != mine.sizes()) {
      throw InputError("optimizer state '" + name + "' has shape " + c10::str(it->second.sizes()) +
                       ", expected " + c10::str(mine.sizes()));
    }
    at::Tensor target = mine;  // shares storage with exp_avg_/exp_avg_sq_
    target.copy_(it->second);
  }
  steps_ = steps;
}

}  // namespace tessera::trainer
