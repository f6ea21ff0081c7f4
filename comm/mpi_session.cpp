#include "comm/mpi_session.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "comm/detail/mpi.h"
#include "core/error.h"
#include "core/logging.h"

namespace tessera::comm {
namespace detail {

void checkMpi(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw CommError(std::string(call) + " failed: " + std::string(text, static_cast<size_t>(len)) +
                  " (" + file + ":" + std::to_string(line) + ")");
}

}  // namespace detail

namespace {

bool envSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

int envInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoi(v) : fallback;
}

std::string hostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

}  // namespace

bool launchedByMpi() {
  // Open MPI's mpirun, PMIx (srun --mpi=pmix, mpirun), PMI-1/2 (MPICH hydra, srun --mpi=pmi2).
  return envSet("OMPI_COMM_WORLD_SIZE") || envSet("PMIX_RANK") || envSet("PMI_RANK") ||
         envSet("PMI_SIZE") || envSet("TESSERA_FORCE_MPI");
}

MpiSession::MpiSession() {
  world_.hostname = hostName();
  if (!launchedByMpi()) {
    if (envInt("SLURM_NTASKS", 1) > 1 && envSet("SLURM_STEP_ID")) {
      throw UsageError(
          "started by srun with " + std::to_string(envInt("SLURM_NTASKS", 1)) +
          " tasks but without an MPI process manager: every task would train alone as rank 0. "
          "Launch with `srun --mpi=pmix` (see launch/slurm/train.sbatch)");
    }
    return;
  }
  int already = 0;
  TESSERA_CHECK_MPI(MPI_Initialized(&already));
  if (!already) {
    // All MPI calls come from the training thread; loader, checkpoint and metrics threads
    // never touch MPI.
    int provided = MPI_THREAD_SINGLE;
    TESSERA_CHECK_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    initialised_here_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      throw CommError("the MPI library provides thread level " + std::to_string(provided) +
                      " but Tessera needs MPI_THREAD_FUNNELED");
    }
  }
  // Errors come back as codes that checkMpi turns into exceptions, instead of aborting.
  TESSERA_CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  TESSERA_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &world_.rank));
  TESSERA_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &world_.size));
  MPI_Comm node = MPI_COMM_NULL;
  TESSERA_CHECK_MPI(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_.rank, MPI_INFO_NULL, &node));
  TESSERA_CHECK_MPI(MPI_Comm_rank(node, &world_.local_rank));
  TESSERA_CHECK_MPI(MPI_Comm_size(node, &world_.local_size));
  TESSERA_CHECK_MPI(MPI_Comm_free(&node));
  world_.mpi = true;
}

MpiSession::~MpiSession() {
  if (!initialised_here_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

std::vector<std::string> MpiSession::allGatherStrings(const std::string& mine) const {
  if (!world_.mpi || world_.size == 1) return {mine};
  const int n = world_.size;
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<size_t>(n));
  TESSERA_CHECK_MPI(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD));
  std::vector<int> offsets(static_cast<size_t>(n), 0);
  for (int r = 1; r < n; ++r) offsets[r] = offsets[r - 1] + lens[r - 1];
  std::string all(static_cast<size_t>(offsets[n - 1] + lens[n - 1]), '\0');
  TESSERA_CHECK_MPI(MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(),
                                   offsets.data(), MPI_CHAR, MPI_COMM_WORLD));
  std::vector<std::string> out;
  for (int r = 0; r < n; ++r) out.push_back(all.substr(offsets[r], lens[r]));
  return out;
}

void MpiSession::abort(int code) const {
  flushLogs();
  if (world_.mpi) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Abort(MPI_COMM_WORLD, code);
  }
  std::_Exit(code);
}

std::string MpiSession::libraryVersion() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  if (MPI_Get_library_version(text, &len) != MPI_SUCCESS) return "unknown";
  std::string s(text, static_cast<size_t>(len));
  s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
  if (auto nl = s.find_first_of("\r\n"); nl != std::string::npos) s.resize(nl);
  while (!s.empty() && (s.back() == ',' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace tessera::comm
