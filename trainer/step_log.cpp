#include "trainer/step_log.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "comm/communicator.h"
#include "comm/grad_reducer.h"

namespace tessera::trainer {

void StepLog::add(const StepResult& result, std::int64_t global_samples, double data_wait_seconds,
                  const std::vector<const comm::ReducerStats*>& comm) {
  ++steps_;
  samples_ += global_samples;
  data_wait_ += data_wait_seconds;
  for (const comm::ReducerStats* s : comm) {
    comm_ += s->comm_seconds;
    exposed_ += s->exposed_seconds;
    bytes_ += s->bytes;
  }
  for (const OptimizerOutcome& u : result.updates) {
    Optimizer* o = nullptr;
    for (auto& existing : optimizers_) {
      if (existing.last.name == u.name) o = &existing;
    }
    if (o == nullptr) o = &optimizers_.emplace_back();
    o->last = u;
    ++(u.applied ? o->applied : o->skipped);
  }
  if (!result.finite()) return;
  torch::NoGradGuard no_grad;
  for (const auto& [name, value] : result.losses) {
    if (!value.defined()) continue;
    Term* t = nullptr;
    for (auto& existing : terms_) {
      if (existing.name == name) t = &existing;
    }
    const at::Tensor v = value.detach().to(at::kDouble).reshape({});
    if (t == nullptr) {
      terms_.push_back({name, v.clone(), 1});
    } else {
      t->sum.add_(v.to(t->sum.device()));
      ++t->count;
    }
  }
}

StepLog::Report StepLog::reduce(comm::Communicator& control, std::int64_t step) {
  // Sums and counts of every term, then the step count: one all-reduce.
  std::vector<at::Tensor> sums;
  for (const Term& t : terms_) sums.push_back(t.sum.cpu());
  at::Tensor values =
      torch::zeros({static_cast<std::int64_t>(2 * terms_.size() + 1)}, torch::kDouble);
  for (std::size_t i = 0; i < terms_.size(); ++i) {
    values[static_cast<std::int64_t>(i)] = sums[i].item<double>();
    values[static_cast<std::int64_t>(terms_.size() + i)] = static_cast<double>(terms_[i].count);
  }
  values[static_cast<std::int64_t>(2 * terms_.size())] = static_cast<double>(steps_);
  control.allReduce({values}, comm::ReduceOp::kSum, {"allreduce", "log reduction", step, -1});
  const auto v = values.accessor<double, 1>();

  Report r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double elapsed = std::max(r.seconds, 1e-9);
  for (std::size_t i = 0; i < terms_.size(); ++i) {
    const double count = v[static_cast<std::int64_t>(terms_.size() + i)];
    if (count > 0) r.losses.emplace_back(terms_[i].name, v[static_cast<std::int64_t>(i)] / count);
  }
  for (const Optimizer& o : optimizers_) {
    r.optimizers.push_back(o.last);
    r.applied.emplace_back(o.last.name, o.applied);
    r.skipped.emplace_back(o.last.name, o.skipped);
  }
  r.steps_per_s = steps_ / elapsed;
  r.samples_per_s = samples_ / elapsed;
  r.data_wait_fraction = data_wait_ / elapsed;
  r.comm_seconds_per_step = comm_ / std::max<std::int64_t>(1, steps_);
  r.comm_hidden_fraction = comm_ > 0 ? 1 - exposed_ / comm_ : 0.0;

  // A new window; terms and optimizers keep their order (and so the all-reduce its layout).
  for (Term& t : terms_) {
    t.sum.zero_();
    t.count = 0;
  }
  for (Optimizer& o : optimizers_) o.applied = o.skipped = 0;
  steps_ = samples_ = bytes_ = 0;
  data_wait_ = comm_ = exposed_ = 0;
  start_ = std::chrono::steady_clock::now();
  return r;
}

void StepLog::Report::addTo(JsonObject& line) const {
  for (const auto& [name, mean] : losses) line.add(name, mean);
  if (!optimizers.empty()) {
    line.add("lr", optimizers.front().lr).add("grad_norm", optimizers.front().grad_norm);
  }
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    const std::string& name = optimizers[i].name;
    line.add(name + "/lr", optimizers[i].lr);
    line.add(name + "/grad_norm", optimizers[i].grad_norm);
    line.add(name + "/applied", applied[i].second);
    line.add(name + "/skipped", skipped[i].second);
  }
  line.add("steps_per_s", steps_per_s).add("samples_per_s", samples_per_s);
  line.add("data_wait_fraction", data_wait_fraction);
  line.add("comm_seconds", comm_seconds_per_step);
  line.add("comm_hidden_fraction", comm_hidden_fraction);
}

std::string StepLog::Report::lossText() const {
  std::string text;
  for (const auto& [name, mean] : losses) text += spdlog::fmt_lib::format(" {} {:.5f}", name, mean);
  return text;
}

}  // namespace tessera::trainer
