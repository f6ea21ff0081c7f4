// Writes a dataset file of random images, for benchmarks on machines without h5py (the GPU
// machine): the 64x64x3 file of the README's loader benchmark is
//   make_random_images /tmp/big64.h5 90000 64 64 3 256
// Usage: make_random_images PATH N H W C [CHUNK]   (replaces PATH; bytes depend only on N)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "data/dataset_writer.h"

int main(int argc, char** argv) {
  if (argc != 6 && argc != 7) {
    std::fprintf(stderr, "usage: %s PATH N H W C [CHUNK]\n", argv[0]);
    return 2;
  }
  try {
    const std::int64_t n = std::stoll(argv[2]);
    const tessera::data::ImageShape shape{std::stoll(argv[3]), std::stoll(argv[4]),
                                          std::stoll(argv[5])};
    tessera::data::WriteOptions options;
    options.chunk = argc == 7 ? std::stoll(argv[6]) : 0;
    options.force = true;
    tessera::data::DatasetWriter writer(argv[1], n, shape, /*labels=*/false, options);
    constexpr std::int64_t kPiece = 4096;
    std::vector<std::uint8_t> images(static_cast<std::size_t>(kPiece * shape.bytes()));
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (std::int64_t done = 0; done < n; done += kPiece) {
      const std::int64_t k = std::min(kPiece, n - done);
      for (auto& b : images) {  // xorshift64: fast, and the same bytes every time
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b = static_cast<std::uint8_t>(x >> 56);
      }
      writer.append(images.data(), nullptr, k);
    }
    writer.commit();
    std::printf("%s: %lld images of %s\n", argv[1], static_cast<long long>(n), shape.str().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_random_images: %s\n", e.what());
    return 2;
  }
}
