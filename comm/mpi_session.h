// RAII lifetime of MPI for the process.
//
// Under a launcher (mpirun/mpiexec, srun --mpi=pmix, or any PMI/PMIx environment) the session
// initialises MPI with MPI_Init_thread and finalises it on destruction. Without a launcher the
// process is a world of one and MPI is never touched, so `tessera` runs as a plain program.
#pragma once

#include <string>
#include <vector>

#include "comm/world.h"

namespace tessera::comm {

class MpiSession {
 public:
  // Throws UsageError when started by srun without MPI support (several tasks, no PMI).
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  const World& world() const { return world_; }

  // Every rank passes a string; every rank receives all of them in rank order. A control-plane
  // helper for start-up (hostnames, info); not for training traffic.
  std::vector<std::string> allGatherStrings(const std::string& mine) const;

  // Tears the whole job down with `code` (MPI_Abort under a launcher, _Exit otherwise).
  // For fatal errors after which MPI_Finalize could block on peers that will never arrive.
  [[noreturn]] void abort(int code) const;

  // The MPI library's version string, or "none" when MPI is not initialised.
  static std::string libraryVersion();

 private:
  World world_;
  bool initialised_here_ = false;
};

// True when the environment says a process manager started us as part of a parallel job.
bool launchedByMpi();

}  // namespace tessera::comm
