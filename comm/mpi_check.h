// WEFT_MPI_CHECK(MPI_Allreduce(...)): checks an MPI call's return code and, on failure, aborts
// naming file:line, the call and MPI's error text. weft's communicators set MPI_ERRORS_RETURN so
// that errors reach this check instead of MPI's default handler.
#pragma once

#include <mpi.h>

#include <string>

#include "runtime/core/check.h"

namespace weft::comm::internal {

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "unknown MPI error";
  return std::string(text, length);
}

}  // namespace weft::comm::internal

#define WEFT_MPI_CHECK(call)                                                        \
  do {                                                                              \
    const int weft_mpi_rc_ = (call);                                                \
    WEFT_CHECK(weft_mpi_rc_ == MPI_SUCCESS)                                         \
        << #call << ": " << ::weft::comm::internal::mpi_error_string(weft_mpi_rc_); \
  } while (0)
