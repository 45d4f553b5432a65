#include "comm/mpi_runtime.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "comm/mpi_check.h"
#include "runtime/core/logging.h"

namespace weft::comm {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  WEFT_MPI_CHECK(MPI_Initialized(&initialized));
  int provided = MPI_THREAD_SINGLE;
  if (initialized) {
    WEFT_MPI_CHECK(MPI_Query_thread(&provided));
  } else {
    WEFT_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    owns_ = true;
  }
  WEFT_CHECK(provided == MPI_THREAD_MULTIPLE)
      << "MPI provides thread level " << provided << ", weft needs MPI_THREAD_MULTIPLE ("
      << MPI_THREAD_MULTIPLE << "); use an MPI built with thread support";
  WEFT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  WEFT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  if (world_size_ > 1) set_log_rank(world_rank_);
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Finalize();
}

void abort_all(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace weft::comm
