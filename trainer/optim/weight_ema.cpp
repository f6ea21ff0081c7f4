#include "trainer/optim/weight_ema.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <charconv>
#include <map>

#include "core/error.h"

namespace tessera::trainer {

WeightEma::WeightEma(std::vector<std::pair<std::string, at::Tensor>> params,
                     std::vector<double> decays, UpdateKernel kernel)
    : params_(std::move(params)), decays_(std::move(decays)), kernel_(kernel) {
  c10::NoGradGuard no_grad;
  for (std::size_t r = 0; r < decays_.size(); ++r) {
    std::vector<at::Tensor> copies;
    for (const auto& [name, p] : params_) copies.push_back(p.detach().clone());
    shadows_.push_back(std::move(copies));
  }
}

void WeightEma::update() {
  c10::NoGradGuard no_grad;
  ++updates_;
  // The live parameters, looked up now (a module moved to another device has new storage).
  std::vector<at::Tensor> live;
  live.reserve(params_.size());
  for (const auto& [name, p] : params_) live.push_back(p);
  for (std::size_t r = 0; r < decays_.size(); ++r) {
    multi_tensor::lerp(kernel_, shadows_[r], live, 1 - effectiveDecay(decays_[r], updates_));
  }
}

double WeightEma::effectiveDecay(double decay, std::int64_t u) const {
  if (!warmup_) return decay;
  const double ramp = (1.0 + static_cast<double>(u)) / (10.0 + static_cast<double>(u));
  return ramp < decay ? ramp : decay;
}

std::string WeightEma::rateName(double decay) {
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), decay);
  return std::string(buf, res.ptr);
}

std::vector<std::pair<std::string, at::Tensor>> WeightEma::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (std::size_t r = 0; r < decays_.size(); ++r) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      out.emplace_back(rateName(decays_[r]) + "/" + params_[i].first, shadows_[r][i]);
    }
  }
  return out;
}

void WeightEma::loadState(const std::vector<std::pair<std::string, at::Tensor>>& state,
                          std::int64_t updates) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  c10::NoGradGuard no_grad;
  for (auto& [name, mine] : this->state()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw InputError("weight EMA state has no entry '" + name + "'");
    at::Tensor target = mine;
    target.copy_(it->second);
  }
  updates_ = updates;
}

}  // namespace tessera::trainer
