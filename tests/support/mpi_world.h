// The MPI world communicator of a multi-rank test binary (tests/support/mpi/mpi_test_main.cc
// starts MPI), made on first use and shared by every test of the binary.
#pragma once

#include <memory>

#include "comm/mpi_communicator.h"

namespace weft::testing {

inline comm::Communicator& mpi_world() {
  static std::unique_ptr<comm::Communicator> world = comm::mpi_world_communicator();
  return *world;
}

}  // namespace weft::testing
