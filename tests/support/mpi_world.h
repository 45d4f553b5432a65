// The MPI world communicator of a multi-rank test binary (tests/support/mpi/mpi_test_main.cc
// starts MPI), made on first use and shared by every test of the binary.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "comm/mpi_communicator.h"

namespace weft::testing {

inline comm::Communicator& mpi_world() {
  static std::unique_ptr<comm::Communicator> world = comm::mpi_world_communicator();
  return *world;
}

// A communicator's traffic counters equal `expected`: the same call kinds, and per kind the same
// calls and bytes.
inline void expect_call_stats(const std::map<std::string, comm::CallStats>& got,
                              const std::map<std::string, comm::CallStats>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [kind, e] : expected) {
    SCOPED_TRACE(kind);
    ASSERT_TRUE(got.count(kind));
    EXPECT_EQ(got.at(kind).calls, e.calls);
    EXPECT_EQ(got.at(kind).bytes_sent, e.bytes_sent);
  }
}

}  // namespace weft::testing
