#include "trainer/blas_info.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

namespace tessera::trainer {

BlasInfo blasInfo() {
  BlasInfo info;
  info.name = "unknown";
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info where{};
  if (!sgemm || !dladdr(sgemm, &where) || !where.dli_fname) return info;
  char resolved[PATH_MAX];
  info.library = realpath(where.dli_fname, resolved) ? resolved : where.dli_fname;
  // Ask the library that provides sgemm_ (and what it depends on), not the whole process.
  void* lib = dlopen(where.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (!lib) return info;
  using ConfigFn = char* (*)();
  if (auto config = reinterpret_cast<ConfigFn>(dlsym(lib, "openblas_get_config"))) {
    info.name = "OpenBLAS";
    info.detail = config();
  } else if (dlsym(lib, "bli_info_get_version_str")) {
    info.name = "BLIS";
  } else if (dlsym(lib, "mkl_get_max_threads") || dlsym(lib, "MKL_Get_Max_Threads")) {
    info.name = "MKL";
  } else if (info.library.find("/blas/libblas.so") != std::string::npos) {
    // Debian's netlib package installs the reference library as .../blas/libblas.so.3.
    info.name = "reference (netlib)";
    info.reference = true;
  }
  dlclose(lib);
  return info;
}

std::string blasWarning(const BlasInfo& info) {
  if (!info.reference) return {};
  return "LibTorch calls the reference BLAS (" + info.library +
         "): CPU training is several times slower than with an optimised BLAS; install "
         "libopenblas0-pthread (launch/install_deps.sh does) or select one with "
         "update-alternatives --config libblas.so.3-x86_64-linux-gnu";
}

}  // namespace tessera::trainer
