#include <cstdio>
#include <exception>

#include "core/error.h"
#include "core/logging.h"
#include "trainer/cli.h"

int main(int argc, char** argv) {
  try {
    tessera::initLogging(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tessera: %s\n", e.what());
    return tessera::exitCodeFor(e);
  }
  return tessera::trainer::runCli(argc, argv);
}
