// --comm-report: every rank's traffic counters, per group and per call kind, gathered to rank 0
// and written as JSON:
//   {"ranks": [{"rank": 0, "groups": {"tp": {"calls": 12, "bytes_sent": 4096,
//       "by_kind": {"all_reduce": {"calls": 12, "bytes_sent": 4096}}}, ...}}, ...]}
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"

namespace weft::comm {

// Collective over MPI_COMM_WORLD: call on every rank, from one thread. `groups` are this rank's
// communicators (names unique); their stats are read first and the gather runs on
// MPI_COMM_WORLD directly, so the report counts no traffic of its own. Ranks are listed by
// world.rank(). Rank 0 writes `path`; every rank returns rank 0's outcome.
absl::Status write_comm_report(Communicator& world, const std::vector<const Communicator*>& groups,
                               const std::string& path);

}  // namespace weft::comm
