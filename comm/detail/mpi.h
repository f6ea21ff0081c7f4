// The one way Tessera includes <mpi.h> (only from comm/*.cpp), plus checkMpi.
#pragma once

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // Open MPI's C++ bindings leak into every TU and fail to link
#endif
#include <mpi.h>

#include <string>

namespace tessera::comm::detail {

// Throws CommError naming the call and the location when rc != MPI_SUCCESS.
void checkMpi(int rc, const char* call, const char* file, int line);

}  // namespace tessera::comm::detail

#define TESSERA_CHECK_MPI(call) ::tessera::comm::detail::checkMpi((call), #call, __FILE__, __LINE__)
