// Opens dataset files as the trainer does and reports what it found, for the integration test
// that drives it over h5py-made files, good and bad: every bad file must end in one message and
// exit code 2, never a crash.
//   image_file_check PATH [DATASET [H W C]]   one file; exit code as `tessera` would return
//   image_file_check --cases FILE             one case per line (tab-separated arguments as
//                                             above); prints "<exit code>\t<output>" per case
// (--cases saves a process start, ~1 s of LibTorch loading, per case.)
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/image_file.h"

namespace {

// Returns the exit code; `out` gets the summary or the error message.
int check(const std::vector<std::string>& args, std::string& out) {
  try {
    if (args.size() != 1 && args.size() != 2 && args.size() != 5) {
      throw tessera::UsageError("expected PATH [DATASET [H W C]]");
    }
    const std::string dataset = args.size() >= 2 ? args[1] : "images";
    tessera::data::ImageShape expected;
    if (args.size() == 5)
      expected = {std::stoll(args[2]), std::stoll(args[3]), std::stoll(args[4])};
    const auto file = tessera::data::ImageFile::open(args[0], dataset, &expected);
    std::int64_t first_label = -1;
    if (file.hasLabels()) file.readLabels(0, 1, &first_label);
    out = "images " + std::to_string(file.size()) + " shape " + file.shape().str() + " labels " +
          (file.hasLabels() ? "1" : "0") + " first_label " + std::to_string(first_label);
    return tessera::kExitOk;
  } catch (const std::exception& e) {
    out = e.what();
    return tessera::exitCodeFor(e);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--cases") {
    std::ifstream in(argv[2]);
    if (!in) {
      std::fprintf(stderr, "image_file_check: cannot read %s\n", argv[2]);
      return tessera::kExitUsage;
    }
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> args;
      std::stringstream fields(line);
      for (std::string f; std::getline(fields, f, '\t');) args.push_back(f);
      std::string out;
      const int rc = check(args, out);
      std::printf("%d\t%s\n", rc, out.c_str());
    }
    return tessera::kExitOk;
  }
  std::string out;
  const int rc = check(std::vector<std::string>(argv + 1, argv + argc), out);
  std::fprintf(rc == 0 ? stdout : stderr, "%s%s\n",
               rc == 0 ? "" : "image_file_check: ", out.c_str());
  return rc;
}
