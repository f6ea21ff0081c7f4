// Support for GoogleTest suites that run under mpirun (see mpi_gtest_main.cpp).
#pragma once

namespace tessera::comm {
class MpiSession;
}

namespace tessera::testing {

// The process's MPI session (world size 1 when started without a launcher).
comm::MpiSession& mpiSession();

}  // namespace tessera::testing
