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
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1 - std::pow(b1, static_cast<double>(steps_));
  const double bias2_sqrt = std::sqrt(1 - std::pow(b2, static_cast<double>(steps_)));
  const double step_size = lr / bias1;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    const at::Tensor& g0 = p.grad();
    if (!g0.defined()) continue;
    at::Tensor g = g0;
    if (options_.weight_decay != 0) {
      if (options_.decoupled_weight_decay) {
        p.mul_(1 - lr * options_.weight_decay);
      } else {
        g = g.add(p, options_.weight_decay);
      }
    }
    exp_avg_[i].mul_(b1).add_(g, 1 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1 - b2);
    const at::Tensor denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(options_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
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
