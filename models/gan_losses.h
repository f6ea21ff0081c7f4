// Losses of adversarial autoencoder training (VQGAN): the discriminator and generator losses, the
// discriminator's accuracy, the R1 penalty and the adaptive weight of the generator loss.
// Every function returns a tensor on the inputs' device (nothing is read to the host).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace tessera::models {

// hinge:          D: 1/2 (mean relu(1 - D(x)) + mean relu(1 + D(G)))       G: -mean D(G)
// vanilla:        D: 1/2 (mean softplus(-D(x)) + mean softplus(D(G)))       G: -mean softplus(D(G))
//                 (BCE with logits; G minimises log(1 - sigmoid D(G)), the saturating minimax)
// non_saturating: D: as vanilla                                             G: mean softplus(-D(G))
//                 (G maximises log sigmoid D(G))
enum class GanLoss { kHinge, kVanilla, kNonSaturating };
// "hinge", "vanilla", "non_saturating"; throws ConfigError otherwise.
GanLoss parseGanLoss(const std::string& name);

at::Tensor discriminatorLoss(GanLoss kind, const at::Tensor& logits_real,
                             const at::Tensor& logits_fake);
at::Tensor generatorLoss(GanLoss kind, const at::Tensor& logits_fake);

// The fraction of logits on the right side of 0: real > 0 and fake < 0, over all logits of both
// (a 0-dim float tensor; detached).
at::Tensor discriminatorAccuracy(const at::Tensor& logits_real, const at::Tensor& logits_fake);

// R1 (Mescheder et al. 2018): the mean over images of ||d sum(D(x)) / dx||^2, where
// `logits_real` = D(`real`) and `real` requires grad. The result is differentiable with respect
// to D's parameters (create_graph); the caller applies gamma / 2 and the interval.
at::Tensor r1Penalty(const at::Tensor& logits_real, const at::Tensor& real);

enum class ReconstructionLoss { kL1, kL2 };
// "l1", "l2"; throws ConfigError otherwise.
ReconstructionLoss parseReconstructionLoss(const std::string& name);
// Elementwise |x - y| or (x - y)^2, not reduced (the caller adds the perceptual term per pixel or
// takes the mean).
at::Tensor reconstructionError(ReconstructionLoss kind, const at::Tensor& x, const at::Tensor& y);

// The adaptive weight of the generator loss (Esser et al. 2021, eq. 7):
//   clamp(rec_grad_norm / (gen_grad_norm + 1e-4), 0, 1e4) * disc_weight, detached,
// from the norms of the gradients of the reconstruction (+ perceptual) loss and of the generator
// loss with respect to the decoder's last layer (lastLayerWeight()). The norms must be those of
// the gradients averaged over ranks; their all-reduce is the trainer's.
at::Tensor adaptiveWeight(const at::Tensor& rec_grad_norm, const at::Tensor& gen_grad_norm,
                          double disc_weight);

}  // namespace tessera::models
