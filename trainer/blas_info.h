// Which BLAS library LibTorch's CPU kernels call in this process. Debian's LibTorch calls
// `libblas.so.3`, an alternatives link that may point at netlib's reference implementation,
// which is an order of magnitude slower than an optimised one (OpenBLAS, BLIS, MKL).
#pragma once

#include <string>

namespace tessera::trainer {

struct BlasInfo {
  std::string name;     // "OpenBLAS", "reference (netlib)", "BLIS", "MKL", or "unknown"
  std::string library;  // resolved path of the library that provides sgemm_ ("" when unknown)
  std::string detail;   // e.g. OpenBLAS's build configuration
  bool reference = false;
};

BlasInfo blasInfo();

// One warning line when the reference BLAS is in use ("" otherwise).
std::string blasWarning(const BlasInfo& info);

}  // namespace tessera::trainer
