// Latent diffusion's view of a frozen vector-quantised autoencoder (a VQ-VAE or VQGAN
// checkpoint): its quantised latents, and the per-channel affine map that stores them like
// images.
//
// A quantised latent z_q is a code vector, so each of its channels lies between the smallest and
// the largest value that channel takes over the codebook, lo[c] and hi[c]. The map
//     x = 2 (z - lo) / (hi - lo) - 1
// takes every quantised latent into [-1, 1], the range the diffusion model trains in, and the
// uint8 form of [-1, 1] (the images' own conversion, data/image_transform.h) stores it in a
// Tessera image file of h x w x D "pixels". The 8-bit rounding moves a channel by at most
// (hi - lo) / 510; snapping the stored latent back to its nearest code vector recovers the code
// (`tessera encode` counts how often, and says so).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

#include "data/image_shape.h"
#include "trainer/weights.h"

namespace tessera::trainer {

struct LoadedTask;

class LatentSpace {
 public:
  // Loads the autoencoder `path` names: a checkpoint file, or a run's checkpoint directory (the
  // checkpoint its `latest` file names). InputError naming `setting` and the path when it is
  // missing, unreadable, or of a task without a quantised latent space.
  static LatentSpace open(const std::string& path, WeightChoice weights, c10::Device device,
                          const std::string& setting);
  LatentSpace(LatentSpace&&) noexcept;
  LatentSpace& operator=(LatentSpace&&) noexcept;
  ~LatentSpace();

  const std::string& checkpoint() const { return checkpoint_; }  // the file loaded
  std::int64_t step() const;
  const std::string& weights() const;  // "live" or "ema <decay>"
  std::string taskName() const;
  data::ImageShape imageShape() const { return image_; }    // what the autoencoder encodes
  data::ImageShape latentShape() const { return latent_; }  // h x w x D
  const at::Tensor& lower() const { return lo_; }           // [D] float, CPU
  const at::Tensor& upper() const { return hi_; }           // [D] float, CPU

  // Images [N, C, H, W] in [-1, 1] -> quantised latents [N, D, h, w] (CPU floats).
  at::Tensor encode(const at::Tensor& images);
  // Latents <-> [-1, 1] through the per-channel map.
  at::Tensor toUnit(const at::Tensor& latents) const;
  at::Tensor fromUnit(const at::Tensor& unit) const;
  // Each latent vector replaced by its nearest code vector (squared Euclidean distance).
  at::Tensor snap(const at::Tensor& latents) const;
  // Latents [N, D, h, w] -> images [N, C, H, W] in [-1, 1] (CPU).
  at::Tensor decode(const at::Tensor& latents);

 private:
  LatentSpace();
  std::string checkpoint_;
  std::unique_ptr<LoadedTask> task_;
  data::ImageShape image_, latent_;
  at::Tensor codes_;  // [K, D]
  at::Tensor lo_, hi_;
};

}  // namespace tessera::trainer
