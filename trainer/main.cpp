#include <csignal>
#include <cstdio>
#include <exception>

#include "core/error.h"
#include "core/logging.h"
#include "trainer/cli.h"

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) must fail a write with EFBIG, which the checkpoint store
  // reports and survives, instead of killing the job.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    tessera::initLogging(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tessera: %s\n", e.what());
    return tessera::exitCodeFor(e);
  }
  return tessera::trainer::runCli(argc, argv);
}
