// Run by fid_inception_reference_test.py: loads converted FID Inception weights with
// models::FidInception, prints "fingerprint <hex>" and, given a cases file, compares its float32
// features of each case's images with PyTorch's.
//   fid_inception_compare WEIGHTS [CASES TOLERANCE_F32 TOLERANCE_F64]
// A case NAME has NAME.x (images in [-1, 1]), NAME.f32 and NAME.f64 (PyTorch's features in float32
// and float64). The error is the largest absolute difference over the largest |feature|. Exit 0
// when every case is within both tolerances, 1 otherwise or when loading fails (the message on
// stderr).
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "models/fid_inception.h"
#include "models/safetensors_reader.h"

namespace {

double relativeError(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>() /
         want.abs().max().item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 5) {
    std::fprintf(stderr, "usage: %s WEIGHTS [CASES TOLERANCE_F32 TOLERANCE_F64]\n", argv[0]);
    return 2;
  }
  try {
    torch::set_num_threads(2);
    auto net = tessera::models::FidInception::load(argv[1], c10::Device(c10::kCPU));
    std::printf("fingerprint %s\n", net.fingerprint().c_str());
    if (argc == 2) return 0;
    const double tol32 = std::stod(argv[3]), tol64 = std::stod(argv[4]);
    std::map<std::string, at::Tensor> cases;
    for (auto& [name, t] : tessera::models::readSafetensors(argv[2]).tensors) cases[name] = t;
    bool ok = true;
    for (const auto& [key, x] : cases) {
      const auto dot = key.rfind('.');
      if (key.substr(dot) != ".x") continue;
      const std::string name = key.substr(0, dot);
      const at::Tensor got = net.features(x.to(at::kFloat));
      const bool shape_ok = got.scalar_type() == at::kFloat && got.device().is_cpu() &&
                            got.dim() == 2 && got.size(0) == x.size(0) && got.size(1) == 2048;
      const double e32 = relativeError(got, cases.at(name + ".f32"));
      const double e64 = relativeError(got, cases.at(name + ".f64"));
      const bool pass = shape_ok && e32 <= tol32 && e64 <= tol64;
      std::printf(
          "%s %s: error vs PyTorch float32 %.3g (tolerance %.0g), vs float64 %.3g (%.0g): %s\n",
          name.c_str(), shape_ok ? "[N, 2048] float32" : "WRONG SHAPE", e32, tol32, e64, tol64,
          pass ? "ok" : "MISMATCH");
      ok = ok && pass;
      if (x.size(0) < 2) continue;
      // One image alone gives its row of the batch: nothing mixes images.
      const double alone = relativeError(net.features(x.slice(0, 1, 2)), got.slice(0, 1, 2));
      std::printf("%s: image 1 alone vs in the batch %.3g\n", name.c_str(), alone);
      ok = ok && alone <= tol32;
    }
    const at::Tensor none = net.features(torch::zeros({0, 3, 299, 299}));
    ok = ok && none.dim() == 2 && none.size(0) == 0 && none.size(1) == 2048;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fid_inception_compare: %s\n", e.what());
    return 1;
  }
}
