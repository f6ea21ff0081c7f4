// Helper of tests/models/distribution_metrics_reference_test.py: reads two feature sets (raw
// files: int64 N, int64 D, then N x D float64 little-endian), fits each in chunks of 97 rows (as
// shards would) and prints one JSON line: fd, precision, recall, mean/cov of the first set's
// entries [0][0] for a sanity check.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

#include "models/distribution_metrics.h"

namespace {

at::Tensor readSet(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::int64_t n = 0, d = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  in.read(reinterpret_cast<char*>(&d), 8);
  at::Tensor t = torch::empty({n, d}, torch::kDouble);
  in.read(reinterpret_cast<char*>(t.data_ptr<double>()), n * d * 8);
  if (!in) throw std::runtime_error("cannot read " + path);
  return t;
}

tessera::models::Gaussian fit(const at::Tensor& x) {
  tessera::models::FeatureSums sums(x.size(1));
  for (std::int64_t s = 0; s < x.size(0); s += 97) sums.add(x.slice(0, s, s + 97));
  tessera::models::LocalStatsReducer local;
  sums.reduce(local);
  return sums.gaussian();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: distribution_metrics_compare A.bin B.bin\n";
    return 2;
  }
  const at::Tensor a = readSet(argv[1]);
  const at::Tensor b = readSet(argv[2]);
  const double fd = tessera::models::frechetDistance(fit(a), fit(b));
  tessera::models::LocalStatsReducer local;
  const auto pr = tessera::models::precisionRecall(a, b, local, 3);
  std::printf("{\"fd\": %.17g, \"precision\": %.17g, \"recall\": %.17g}\n", fd, pr.precision,
              pr.recall);
  return 0;
}
