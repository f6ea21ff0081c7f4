// Run by lpips_reference_test.py: loads the converted LPIPS weights with models::Lpips and compares
// its distances and input gradients with PyTorch's float64 values in the cases file.
//   lpips_compare WEIGHTS.safetensors CASES.safetensors
// Exit 0 when every case agrees: distances within 1e-5 (float32; relative to max(1, |d|)) and
// 1e-9 (float64), gradients within 1e-4 (float32) and 1e-9 (float64) of their largest entry.
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "models/lpips.h"
#include "models/safetensors_reader.h"

namespace {

double relativeError(const at::Tensor& got, const at::Tensor& want) {
  const double scale = std::max(1.0, want.abs().max().item<double>());
  return (got.to(at::kDouble) - want).abs().max().item<double>() / scale;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s WEIGHTS CASES\n", argv[0]);
    return 2;
  }
  try {
    torch::set_num_threads(2);
    tessera::models::Lpips net(std::string{argv[1]});
    std::map<std::string, at::Tensor> cases;
    for (auto& [name, t] : tessera::models::readSafetensors(argv[2]).tensors) cases[name] = t;
    bool ok = true;
    for (const std::string name : {"rgb", "gray"}) {
      const at::Tensor x = cases.at(name + ".x"), y = cases.at(name + ".y");
      const at::Tensor d = cases.at(name + ".d"), grad = cases.at(name + ".grad");
      for (const auto dtype : {at::kFloat, at::kDouble}) {
        net->to(dtype);
        const at::Tensor xi = x.to(dtype).requires_grad_(true);
        const at::Tensor got = net->forward(xi, y.to(dtype));
        got.sum().backward();
        const bool f32 = dtype == at::kFloat;
        const double d_err = relativeError(got.detach(), d);
        const double g_err = (xi.grad().to(at::kDouble) - grad).abs().max().item<double>() /
                             grad.abs().max().item<double>();
        const double d_tol = f32 ? 1e-5 : 1e-9, g_tol = f32 ? 1e-4 : 1e-9;
        const bool pass = d_err <= d_tol && g_err <= g_tol;
        std::printf("%s %s: distance error %.3g (tolerance %.0g), gradient error %.3g (%.0g): %s\n",
                    name.c_str(), f32 ? "float32" : "float64", d_err, d_tol, g_err, g_tol,
                    pass ? "ok" : "MISMATCH");
        ok = ok && pass;
      }
    }
    // Every parameter frozen: the loss trains nothing.
    for (const auto& p : net->parameters()) {
      if (p.requires_grad()) {
        std::printf("a parameter requires grad\n");
        ok = false;
      }
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lpips_compare: %s\n", e.what());
    return 1;
  }
}
