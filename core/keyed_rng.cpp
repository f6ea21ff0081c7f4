#include "core/keyed_rng.h"

#include "core/error.h"
#include "core/torch_compat.h"

namespace tessera {
namespace {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  return splitmix64(h ^ splitmix64(v));
}

}  // namespace

std::uint64_t rngKey(std::uint64_t seed, RngPurpose purpose, std::uint64_t a, std::uint64_t b,
                     std::uint64_t c) {
  std::uint64_t h = splitmix64(seed);
  h = mix(h, static_cast<std::uint64_t>(purpose));
  h = mix(h, a);
  h = mix(h, b);
  return mix(h, c);
}

std::uint64_t KeyedStream::next() {
  return mix(key_, counter_++);
}

std::uint64_t KeyedStream::below(std::uint64_t n) {
  TORCH_CHECK(n > 0, "KeyedStream::below(0)");
  // Lemire: the high 64 bits of x*n are uniform in [0, n) once the low part clears a threshold.
  const std::uint64_t threshold = (0 - n) % n;
  for (;;) {
    const unsigned __int128 m = static_cast<unsigned __int128>(next()) * n;
    if (static_cast<std::uint64_t>(m) >= threshold) return static_cast<std::uint64_t>(m >> 64);
  }
}

double KeyedStream::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::vector<std::int64_t> keyedPermutation(std::int64_t n, std::uint64_t key) {
  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = i;
  KeyedStream stream(key);
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(stream.below(static_cast<std::uint64_t>(i) + 1));
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  }
  return perm;
}

at::Generator makeGenerator(std::uint64_t key, c10::Device device) {
  return compat::makeGenerator(key, device);
}

}  // namespace tessera
