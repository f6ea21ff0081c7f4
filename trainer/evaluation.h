// Reconstruction quality of an autoencoder on a dataset: MSE, PSNR and SSIM on [0, 1] pixels,
// plus codebook usage. Ranks evaluate disjoint shards; the sums are reduced, so every rank gets
// the result for the whole (or first `limit`) images.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <utility>

#include "core/json.h"
#include "models/stats_reducer.h"
#include "models/vqvae.h"

namespace tessera::data {
class ImageFile;
}

namespace tessera::trainer {

struct ReconstructionMetrics {
  std::int64_t images = 0;
  double mse = 0;             // mean squared error per pixel, [0, 1] scale
  double psnr = 0;            // 10 log10(1 / mse): from the dataset-wide MSE
  double psnr_per_image = 0;  // mean over images of each image's PSNR
  double ssim = 0;            // mean SSIM (Gaussian window 11, sigma 1.5)
  double codebook_usage = 0;  // fraction of codes used on this data
  double perplexity = 0;

  JsonObject toJson() const;
};

// Reconstructions and code indices of a batch of model inputs ([N, C, H, W] in [-1, 1]).
using Reconstructor = std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&)>;

// Any autoencoder with a codebook of `codebook_size` codes (the caller sets evaluation mode).
ReconstructionMetrics evaluateReconstructions(const Reconstructor& reconstruct,
                                              std::int64_t codebook_size,
                                              const data::ImageFile& file, c10::Device device,
                                              std::int64_t batch_size,
                                              models::StatsReducer& reducer,
                                              std::int64_t limit = 0);

ReconstructionMetrics evaluateVqVae(models::VqVae& model, const data::ImageFile& file,
                                    c10::Device device, std::int64_t batch_size,
                                    models::StatsReducer& reducer, std::int64_t limit = 0);

// Mean SSIM of each image pair ([N, C, H, W] in [0, 1]); returns [N].
at::Tensor ssimPerImage(const at::Tensor& a, const at::Tensor& b);

}  // namespace tessera::trainer
