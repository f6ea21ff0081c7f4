// Who this process is in the job: rank and size in the world, and on its node.
#pragma once

#include <string>

namespace tessera::comm {

struct World {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the processes on this node
  int local_size = 1;
  std::string hostname;
  bool mpi = false;  // false: a plain single process, no MPI initialised at all

  bool isRoot() const { return rank == 0; }
};

// The accelerator index this rank uses: local_rank % device_count (device_count > 0).
int deviceIndexFor(const World& world, int device_count);

}  // namespace tessera::comm
