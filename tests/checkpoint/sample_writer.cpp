// Writes testing::sampleState(step) as a checkpoint, for the Python tests that read it with h5py:
//   checkpoint_sample_writer OUT.h5 [STEP]
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "test_states.h"
#include "trainer/checkpoint/checkpoint_file.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s OUT.h5 [STEP]\n", argv[0]);
    return 2;
  }
  try {
    const std::int64_t step = argc == 3 ? std::atoll(argv[2]) : 7;
    tessera::trainer::writeCheckpointFile(argv[1], tessera::testing::sampleState(step));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_sample_writer: %s\n", e.what());
    return 1;
  }
  return 0;
}
