// Prints one JSON line: the training thread's time blocked by an asynchronous vs a synchronous
// save (see trainer/checkpoint/checkpoint_benchmark.h).
//   checkpoint_bench DIR [BYTES [REPEATS]]   (default: 3 x 658,625 float32, 5 repeats)
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "core/logging.h"
#include "trainer/checkpoint/checkpoint_benchmark.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s DIR [BYTES [REPEATS]]\n", argv[0]);
    return 2;
  }
  try {
    tessera::initLogging(0);  // logs to stderr, the JSON line alone on stdout
    const std::int64_t bytes = argc >= 3 ? std::atoll(argv[2]) : 3LL * 658625 * 4;
    const int repeats = argc >= 4 ? std::atoi(argv[3]) : 5;
    std::cout << tessera::trainer::benchmarkCheckpoint(argv[1], bytes, repeats).str() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
