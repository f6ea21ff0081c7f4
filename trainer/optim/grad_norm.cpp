#include "trainer/optim/grad_norm.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "core/torch_compat.h"

namespace tessera::trainer {
namespace {

std::vector<at::Tensor> definedOnly(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (t.defined()) out.push_back(t);
  }
  return out;
}

// max_norm / (norm + 1e-6) in float64 on the norm's device, as the host computed it before.
at::Tensor clipCoefficient(const at::Tensor& norm, double max_norm) {
  const at::Tensor n = norm.detach().to(at::kDouble);
  return at::scalar_tensor(max_norm, n.options()).div(n + 1e-6);
}

}  // namespace

at::Tensor globalNorm(const std::vector<at::Tensor>& grads) {
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> fp32, other;
  for (const auto& g : grads) {
    if (!g.defined()) continue;
    (g.scalar_type() == at::kFloat ? fp32 : other).push_back(g);
  }
  if (fp32.empty() && other.empty()) return at::zeros({}, at::kFloat);
  // One norm per tensor (one multi-tensor kernel on CUDA), then the norm of those norms.
  std::vector<at::Tensor> norms;
  if (!fp32.empty()) norms = at::_foreach_norm(fp32);
  for (const auto& g : other) {
    // float16/bfloat16 accumulate in float32; float64 in float64.
    const bool reduced = g.scalar_type() == at::kHalf || g.scalar_type() == at::kBFloat16;
    norms.push_back(
        at::linalg_vector_norm(g, 2, c10::nullopt, false,
                               reduced ? c10::optional<at::ScalarType>(at::kFloat) : c10::nullopt)
            .to(at::kFloat));
  }
  return at::linalg_vector_norm(at::stack(norms), 2);
}

void clipByGlobalNorm(const std::vector<at::Tensor>& grads, double max_norm,
                      const at::Tensor& norm) {
  TORCH_CHECK(max_norm > 0, "clipByGlobalNorm: max_norm must be > 0, got ", max_norm);
  c10::NoGradGuard no_grad;
  const std::vector<at::Tensor> defined = definedOnly(grads);
  if (defined.empty()) return;
  const at::Tensor coef = clipCoefficient(norm, max_norm);
  if (coef.device().is_cpu()) {
    const double c = coef.item<double>();
    if (!(c < 1)) return;
    for (const auto& g : defined) g.mul_(c);
    return;
  }
  // coef where coef < 1, else exactly 1 (a NaN coefficient compares false: no change).
  const at::Tensor factor = at::where(coef < 1, coef, at::ones_like(coef)).to(at::kFloat);
  compat::foreachMulByTensor_(defined, factor);
}

namespace reference {

at::Tensor globalNorm(const std::vector<at::Tensor>& grads) {
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> squares;
  for (const auto& g : grads) {
    if (g.defined()) squares.push_back(g.to(at::kFloat).pow(2).sum());
  }
  if (squares.empty()) return at::zeros({}, at::kFloat);
  return at::stack(squares).sum().sqrt();
}

void clipByGlobalNorm(const std::vector<at::Tensor>& grads, double max_norm,
                      const at::Tensor& norm) {
  c10::NoGradGuard no_grad;
  const double coef = max_norm / (norm.item<double>() + 1e-6);
  if (coef < 1) {
    for (const auto& g : grads) {
      if (g.defined()) g.mul_(coef);
    }
  }
}

}  // namespace reference
}  // namespace tessera::trainer
