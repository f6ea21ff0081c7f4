#include "trainer/evaluation.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "data/image_file.h"
#include "trainer/inference.h"

namespace tessera::trainer {

JsonObject ReconstructionMetrics::toJson() const {
  JsonObject o;
  o.add("images", images)
      .add("mse", mse)
      .add("psnr", psnr)
      .add("psnr_per_image", psnr_per_image)
      .add("ssim", ssim)
      .add("codebook_usage", codebook_usage)
      .add("perplexity", perplexity)
      .add("code_entropy_bits", perplexity > 0 ? std::log2(perplexity) : 0.0);
  return o;
}

at::Tensor ssimPerImage(const at::Tensor& a, const at::Tensor& b) {
  const std::int64_t channels = a.size(1);
  const int size = 11;
  const double sigma = 1.5;
  at::Tensor g = torch::arange(size, a.options()) - (size - 1) / 2.0;
  g = torch::exp(-(g * g) / (2 * sigma * sigma));
  g = g / g.sum();
  const at::Tensor kernel = (g.unsqueeze(1) * g.unsqueeze(0)).expand({channels, 1, size, size});
  auto blur = [&](const at::Tensor& x) {
    return at::conv2d(x, kernel, /*bias=*/{}, /*stride=*/at::IntArrayRef{1},
                      /*padding=*/at::IntArrayRef{0}, /*dilation=*/at::IntArrayRef{1}, channels);
  };
  const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  const at::Tensor mu_a = blur(a);
  const at::Tensor mu_b = blur(b);
  const at::Tensor var_a = blur(a * a) - mu_a * mu_a;
  const at::Tensor var_b = blur(b * b) - mu_b * mu_b;
  const at::Tensor cov = blur(a * b) - mu_a * mu_b;
  const at::Tensor map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) /
                         ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2));
  return map.flatten(1).mean(1);
}

ReconstructionMetrics evaluateVqVae(models::VqVae& model, const data::ImageFile& file,
                                    c10::Device device, std::int64_t batch_size,
                                    models::StatsReducer& reducer, std::int64_t limit) {
  const bool was_training = model->is_training();
  model->eval();
  const ReconstructionMetrics m = evaluateReconstructions(
      [&](const at::Tensor& x) {
        const models::VqVaeOutput out = model->forward(x);
        return std::make_pair(out.reconstruction, out.codes);
      },
      model->options().quantizer.codebook_size, file, device, batch_size, reducer, limit);
  if (was_training) model->train();
  return m;
}

ReconstructionMetrics evaluateReconstructions(const Reconstructor& reconstruct,
                                              std::int64_t codebook_size,
                                              const data::ImageFile& file, c10::Device device,
                                              std::int64_t batch_size,
                                              models::StatsReducer& reducer, std::int64_t limit) {
  torch::NoGradGuard no_grad;
  const std::int64_t total = limit > 0 ? std::min(limit, file.size()) : file.size();
  const std::int64_t begin = total * reducer.rank() / reducer.size();
  const std::int64_t end = total * (reducer.rank() + 1) / reducer.size();
  const std::int64_t k = codebook_size;

  // sums: squared error, pixels, per-image PSNR, SSIM, images; then code counts.
  at::Tensor sums = torch::zeros({5 + k}, torch::kDouble);
  for (std::int64_t start = begin; start < end; start += batch_size) {
    const std::int64_t count = std::min(batch_size, end - start);
    const at::Tensor x = readImages(file, start, count).to(device);
    const auto [reconstruction, codes] = reconstruct(x);
    const at::Tensor a = ((x + 1) / 2).to(torch::kFloat);
    const at::Tensor b = ((reconstruction.clamp(-1, 1) + 1) / 2).to(torch::kFloat);
    const at::Tensor se = (a - b).pow(2).flatten(1).sum(1).to(torch::kDouble).cpu();
    const double pixels = static_cast<double>(a[0].numel());
    const at::Tensor psnr = (10 * torch::log10(pixels / se.clamp_min(1e-12)));
    sums[0] += se.sum();
    sums[1] += pixels * count;
    sums[2] += psnr.sum();
    sums[3] += ssimPerImage(a, b).sum().to(torch::kDouble).cpu();
    sums[4] += count;
    sums.slice(0, 5) += at::bincount(codes.reshape(-1).cpu(), {}, k).to(torch::kDouble);
  }
  reducer.sumInPlace(sums);

  ReconstructionMetrics m;
  m.images = static_cast<std::int64_t>(sums[4].item<double>());
  if (m.images == 0) return m;
  m.mse = sums[0].item<double>() / sums[1].item<double>();
  m.psnr = 10 * std::log10(1.0 / std::max(m.mse, 1e-12));
  m.psnr_per_image = sums[2].item<double>() / m.images;
  m.ssim = sums[3].item<double>() / m.images;
  const at::Tensor counts = sums.slice(0, 5);
  m.codebook_usage = (counts > 0).sum().item<double>() / k;
  const at::Tensor p = counts / counts.sum();
  m.perplexity = std::exp(-(p * (p + 1e-30).log()).sum().item<double>());
  return m;
}

}  // namespace tessera::trainer
