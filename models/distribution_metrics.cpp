#include "models/distribution_metrics.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace tessera::models {

FeatureSums::FeatureSums(std::int64_t dims, std::int64_t classes)
    : dims_(dims),
      classes_(classes),
      sums_(torch::zeros({1 + dims + dims * dims + classes + 1}, torch::kDouble)) {}

void FeatureSums::add(const at::Tensor& features, const at::Tensor& probabilities) {
  const at::Tensor f = features.to(torch::kCPU, torch::kDouble).reshape({-1, dims_});
  sums_[0] += f.size(0);
  sums_.slice(0, 1, 1 + dims_) += f.sum(0);
  sums_.slice(0, 1 + dims_, 1 + dims_ + dims_ * dims_) += f.t().mm(f).reshape(-1);
  if (classes_ > 0) {
    const at::Tensor p = probabilities.to(torch::kCPU, torch::kDouble).reshape({-1, classes_});
    const std::int64_t at = 1 + dims_ + dims_ * dims_;
    sums_.slice(0, at, at + classes_) += p.sum(0);
    sums_[at + classes_] += torch::special_xlogy(p, p).sum();
  }
}

void FeatureSums::reduce(StatsReducer& reducer) {
  reducer.sumInPlace(sums_);
}

std::int64_t FeatureSums::count() const {
  return static_cast<std::int64_t>(sums_[0].item<double>());
}

Gaussian FeatureSums::gaussian() const {
  const double n = sums_[0].item<double>();
  if (n < 2) throw std::invalid_argument("a covariance needs at least 2 feature vectors");
  Gaussian g;
  g.count = static_cast<std::int64_t>(n);
  g.mean = sums_.slice(0, 1, 1 + dims_) / n;
  const at::Tensor outer =
      sums_.slice(0, 1 + dims_, 1 + dims_ + dims_ * dims_).reshape({dims_, dims_});
  g.cov = (outer - n * torch::outer(g.mean, g.mean)) / (n - 1);
  g.cov = (g.cov + g.cov.t()) / 2;
  return g;
}

double FeatureSums::inceptionScore() const {
  if (classes_ == 0) return 0;
  const double n = sums_[0].item<double>();
  if (n < 1) return 0;
  const std::int64_t at = 1 + dims_ + dims_ * dims_;
  const at::Tensor marginal = sums_.slice(0, at, at + classes_) / n;
  // E_x sum_y p log p - sum_y p(y) log p(y)
  const double conditional = sums_[at + classes_].item<double>() / n;
  const double marginal_term = torch::special_xlogy(marginal, marginal).sum().item<double>();
  return std::exp(conditional - marginal_term);
}

namespace {

// The symmetric square root of a symmetric positive semi-definite matrix.
at::Tensor symmetricSqrt(const at::Tensor& s) {
  const auto [values, vectors] = torch::linalg_eigh(s);
  return (vectors * values.clamp_min(0).sqrt().unsqueeze(0)).mm(vectors.t());
}

}  // namespace

double frechetDistance(const Gaussian& a, const Gaussian& b) {
  const at::Tensor s1 = a.cov.to(torch::kDouble);
  const at::Tensor s2 = b.cov.to(torch::kDouble);
  const at::Tensor diff = a.mean.to(torch::kDouble) - b.mean.to(torch::kDouble);
  const at::Tensor root1 = symmetricSqrt(s1);
  at::Tensor m = root1.mm(s2).mm(root1);
  m = (m + m.t()) / 2;
  const double trace_sqrt = torch::linalg_eigvalsh(m).clamp_min(0).sqrt().sum().item<double>();
  return diff.dot(diff).item<double>() + s1.trace().item<double>() + s2.trace().item<double>() -
         2 * trace_sqrt;
}

namespace {

// Squared distances [rows, N] of `x` [rows, D] to `y` [N, D], float64.
at::Tensor squaredDistances(const at::Tensor& x, const at::Tensor& y, const at::Tensor& y_norms) {
  const at::Tensor x_norms = (x * x).sum(1, /*keepdim=*/true);
  return (x_norms + y_norms.unsqueeze(0) - 2 * x.mm(y.t())).clamp_min(0);
}

constexpr std::int64_t kBlock = 1024;

// The squared distance of each of `set`'s rows [begin, end) to its k-th nearest other member.
at::Tensor kthRadii(const at::Tensor& set, std::int64_t begin, std::int64_t end, std::int64_t k) {
  const at::Tensor norms = (set * set).sum(1);
  std::vector<at::Tensor> parts;
  for (std::int64_t s = begin; s < end; s += kBlock) {
    const std::int64_t e = std::min(end, s + kBlock);
    const at::Tensor d = squaredDistances(set.slice(0, s, e), set, norms);
    // The k+1 smallest include the point itself (distance 0).
    parts.push_back(std::get<0>(d.topk(k + 1, 1, /*largest=*/false, /*sorted=*/true)).select(1, k));
  }
  return parts.empty() ? torch::zeros({0}, torch::kDouble) : at::cat(parts);
}

// How many of `queries` rows [begin, end) lie within some ball of `set` (squared radii).
double insideCount(const at::Tensor& queries, std::int64_t begin, std::int64_t end,
                   const at::Tensor& set, const at::Tensor& radii) {
  const at::Tensor norms = (set * set).sum(1);
  double inside = 0;
  for (std::int64_t s = begin; s < end; s += kBlock) {
    const std::int64_t e = std::min(end, s + kBlock);
    const at::Tensor d = squaredDistances(queries.slice(0, s, e), set, norms);
    inside += (d <= radii.unsqueeze(0)).any(1).sum().item<double>();
  }
  return inside;
}

}  // namespace

PrecisionRecall precisionRecall(const at::Tensor& real_in, const at::Tensor& fake_in,
                                StatsReducer& reducer, std::int64_t k) {
  const at::Tensor real = real_in.to(torch::kCPU, torch::kDouble).contiguous();
  const at::Tensor fake = fake_in.to(torch::kCPU, torch::kDouble).contiguous();
  if (real.size(0) <= k || fake.size(0) <= k) {
    throw std::invalid_argument("precision and recall need more than k = " + std::to_string(k) +
                                " samples in each set");
  }
  const int r = reducer.rank(), size = reducer.size();
  auto share = [&](std::int64_t n) { return std::make_pair(n * r / size, n * (r + 1) / size); };
  const auto [rb, re] = share(real.size(0));
  const auto [fb, fe] = share(fake.size(0));
  // Radii of this rank's share of each set, gathered in rank order: every rank has all of them.
  const at::Tensor real_radii = reducer.allGather(kthRadii(real, rb, re, k));
  const at::Tensor fake_radii = reducer.allGather(kthRadii(fake, fb, fe, k));
  at::Tensor counts = torch::zeros({2}, torch::kDouble);
  counts[0] = insideCount(fake, fb, fe, real, real_radii);
  counts[1] = insideCount(real, rb, re, fake, fake_radii);
  reducer.sumInPlace(counts);
  PrecisionRecall pr;
  pr.precision = counts[0].item<double>() / static_cast<double>(fake.size(0));
  pr.recall = counts[1].item<double>() / static_cast<double>(real.size(0));
  return pr;
}

double entropyBits(const at::Tensor& counts) {
  const at::Tensor c = counts.to(torch::kCPU, torch::kDouble).reshape(-1);
  const double total = c.sum().item<double>();
  if (total <= 0) return 0;
  const at::Tensor p = c / total;
  return -torch::special_xlogy(p, p).sum().item<double>() / std::log(2.0);
}

}  // namespace tessera::models
