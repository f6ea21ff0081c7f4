// Keyed randomness (docs/design.md, contract 2): every random draw comes from a generator seeded by
// hash(seed, purpose, coordinates...). There is no RNG state to save, resume is exact, and
// changing the world size changes nothing but the partition of work.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

namespace tessera {

// What a draw is for. The numbers are part of the reproducibility contract: never renumber.
enum class RngPurpose : std::uint64_t {
  kInit = 1,       // parameter initialisation
  kDataOrder = 2,  // epoch permutation
  kAugment = 3,    // per-sample augmentation
  kNoise = 4,      // diffusion noise
  kTimestep = 5,   // diffusion timesteps
  kDropout = 6,
  kCodeRestart = 7,   // VQ dead-code restarts
  kCodebookInit = 8,  // VQ codebook initialisation
  kTest = 99,
};

// 64-bit key from a seed, a purpose and up to three coordinates (step, rank, sample, ...).
// A chain of SplitMix64 finalisers: cheap, well mixed, and stable across platforms.
std::uint64_t rngKey(std::uint64_t seed, RngPurpose purpose, std::uint64_t a = 0,
                     std::uint64_t b = 0, std::uint64_t c = 0);

// A host-side counter-based stream of 64-bit values for permutations and choices; the same key
// gives the same sequence on every platform (no std:: distributions, whose output is
// implementation-defined).
class KeyedStream {
 public:
  explicit KeyedStream(std::uint64_t key) : key_(key) {}
  std::uint64_t next();
  // Uniform in [0, n), unbiased (Lemire's multiply-and-reject). n must be > 0.
  std::uint64_t below(std::uint64_t n);
  // Uniform in [0, 1) with 53 random bits.
  double uniform();

 private:
  std::uint64_t key_;
  std::uint64_t counter_ = 0;
};

// A Fisher-Yates permutation of 0..n-1 drawn from `key`.
std::vector<std::int64_t> keyedPermutation(std::int64_t n, std::uint64_t key);

// A LibTorch generator for `device` whose state is a pure function of `key`.
at::Generator makeGenerator(std::uint64_t key, c10::Device device = c10::Device(c10::kCPU));

}  // namespace tessera
