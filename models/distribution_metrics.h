// Distribution metrics of generated images in a feature space (issue 15): the Fréchet distance
// of Gaussian fits (Heusel et al. 2017, as pytorch-fid computes it), precision and recall of
// k-NN manifolds (Kynkäänniemi et al. 2019), an Inception-Score-style score from a classifier's
// softmax (Salimans et al. 2016) and the entropy of code usage. Sharded: every rank adds its
// own images, and one all-reduce of float64 sums gives every rank the same statistics.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "models/stats_reducer.h"

namespace tessera::models {

// Mean and covariance of features: float64 [D] and [D, D], from `count` vectors.
struct Gaussian {
  at::Tensor mean;
  at::Tensor cov;  // unbiased (divides by count - 1), as numpy.cov
  std::int64_t count = 0;
};

// Float64 sums of features, of their outer products and, when given class probabilities, of
// the probabilities and of sum_y p log p (for the score). reduce() sums them over ranks in one
// all-reduce.
class FeatureSums {
 public:
  FeatureSums(std::int64_t dims, std::int64_t classes = 0);
  // features [N, D]; probabilities [N, classes] (undefined when classes == 0).
  void add(const at::Tensor& features, const at::Tensor& probabilities = at::Tensor());
  void reduce(StatsReducer& reducer);  // every rank calls it
  std::int64_t count() const;
  Gaussian gaussian() const;  // needs count() >= 2
  // exp(E_x KL(p(y|x) || p(y))): 1 for a constant prediction, `classes` at most.
  double inceptionScore() const;

 private:
  std::int64_t dims_, classes_;
  at::Tensor sums_;  // [count, sum (D), outer (D*D), prob sum (classes), sum p log p]
};

// ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64. The trace of the matrix
// square root is that of the symmetric sqrt(S1) S2 sqrt(S1), whose eigenvalues are those of
// S1 S2; negative rounding noise in eigenvalues is clamped to zero.
double frechetDistance(const Gaussian& a, const Gaussian& b);

struct PrecisionRecall {
  double precision = 0;  // fraction of generated samples inside the real manifold
  double recall = 0;     // fraction of real samples inside the generated manifold
};

// Kynkäänniemi et al.: each sample's ball reaches its k-th nearest neighbour in its own set; a
// sample is inside a manifold when it is within some ball of it. `real` and `fake` [N, D] are
// the same on every rank; each rank computes a share of the distances and the counts are summed.
PrecisionRecall precisionRecall(const at::Tensor& real, const at::Tensor& fake,
                                StatsReducer& reducer, std::int64_t k = 3);

// Shannon entropy in bits of the distribution `counts` (any shape; zeros ignored).
double entropyBits(const at::Tensor& counts);

}  // namespace tessera::models
