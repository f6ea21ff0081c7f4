#include "models/gan_losses.h"

#include <torch/torch.h>

#include "core/error.h"

namespace tessera::models {

GanLoss parseGanLoss(const std::string& name) {
  if (name == "hinge") return GanLoss::kHinge;
  if (name == "vanilla") return GanLoss::kVanilla;
  if (name == "non_saturating") return GanLoss::kNonSaturating;
  throw ConfigError("GAN loss '" + name + "' is not one of: hinge, vanilla, non_saturating");
}

at::Tensor discriminatorLoss(GanLoss kind, const at::Tensor& real, const at::Tensor& fake) {
  if (kind == GanLoss::kHinge) {
    return 0.5 * (torch::relu(1.0 - real).mean() + torch::relu(1.0 + fake).mean());
  }
  return 0.5 * (torch::softplus(-real).mean() + torch::softplus(fake).mean());
}

at::Tensor generatorLoss(GanLoss kind, const at::Tensor& fake) {
  switch (kind) {
    case GanLoss::kHinge:
      return -fake.mean();
    case GanLoss::kVanilla:
      return -torch::softplus(fake).mean();
    case GanLoss::kNonSaturating:
      return torch::softplus(-fake).mean();
  }
  return at::Tensor();
}

at::Tensor discriminatorAccuracy(const at::Tensor& real, const at::Tensor& fake) {
  const at::Tensor right = (real.detach() > 0).sum() + (fake.detach() < 0).sum();
  return right.to(at::kFloat) / static_cast<double>(real.numel() + fake.numel());
}

at::Tensor r1Penalty(const at::Tensor& logits_real, const at::Tensor& real) {
  TORCH_CHECK(real.requires_grad(), "r1Penalty: the real images must require grad");
  const at::Tensor grad = torch::autograd::grad({logits_real.sum()}, {real}, {},
                                                /*retain_graph=*/true, /*create_graph=*/true)[0];
  return grad.pow(2).reshape({grad.size(0), -1}).sum(1).mean();
}

ReconstructionLoss parseReconstructionLoss(const std::string& name) {
  if (name == "l1") return ReconstructionLoss::kL1;
  if (name == "l2") return ReconstructionLoss::kL2;
  throw ConfigError("reconstruction loss '" + name + "' is not one of: l1, l2");
}

at::Tensor reconstructionError(ReconstructionLoss kind, const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor d = x - y;
  return kind == ReconstructionLoss::kL1 ? d.abs() : d * d;
}

at::Tensor adaptiveWeight(const at::Tensor& rec_grad_norm, const at::Tensor& gen_grad_norm,
                          double disc_weight) {
  return (rec_grad_norm.detach() / (gen_grad_norm.detach() + 1e-4)).clamp(0.0, 1e4) * disc_weight;
}

}  // namespace tessera::models
