// What this process's communicators are doing right now: the operations in progress, and the
// last one completed. The health monitor (comm/health_monitor.h) reads it to report, in each
// heartbeat, which collective a rank is in and for how long, so that a hang names the rank and
// the collective (docs/operations.md, "Failure detection").
//
// An operation is "in progress" from the moment its backend starts it (the MPI comm thread runs
// it, the NCCL wait begins) until it completes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace weft::comm {

using ActivityClock = std::chrono::steady_clock;

struct OpRecord {
  std::string kind;      // "all_reduce", "recv", ...
  std::string comm;      // the communicator's name ("tp", "dp", ...)
  std::string members;   // its ranks, as world ranks: "0-3" or "0,2,4"
  int64_t seq = 0;       // collectives: 1, 2, ... in issue order on this communicator (p2p: 0)
  int peer = -1;         // point-to-point: the world rank of the other side
  bool idle_ok = false;  // a wait that may last (IdleWaitScope)
  ActivityClock::time_point since;
};

class Activity {
 public:
  static Activity& get();

  // Records `r` as in progress (r.since = now); returns the token for end().
  int64_t begin(OpRecord r);
  void end(int64_t token);
  // World rank `rank` was written off (comm/health_monitor.h): the point-to-point operations
  // with it, running or begun later, never end and count as idle waits, so that they hide no
  // other operation from the monitor.
  void set_peer_lost(int rank);

  struct Snapshot {
    std::optional<OpRecord> oldest;     // the op in progress the longest (not idle, if any is not)
    std::optional<OpRecord> last_done;  // the op that completed last
    ActivityClock::time_point last_done_at{};
  };
  [[nodiscard]] Snapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  int64_t next_ = 1;
  std::map<int64_t, OpRecord> running_;
  std::set<int> lost_;
  std::optional<OpRecord> last_done_;
  ActivityClock::time_point last_done_at_ = ActivityClock::now();
};

// While one is alive on a thread, the operations that thread submits are marked idle_ok: waits
// that may legitimately last (a serving rank waiting for the next step), which the monitor does
// not count as stuck. A dead or stopped peer is still detected by its missing heartbeat.
class IdleWaitScope {
 public:
  IdleWaitScope();
  ~IdleWaitScope();
  IdleWaitScope(const IdleWaitScope&) = delete;
  IdleWaitScope& operator=(const IdleWaitScope&) = delete;

  [[nodiscard]] static bool active();

 private:
  bool previous_;
};

// A backend whose operations complete on a device (NCCL) cannot end its Activity records from a
// host thread that waits: the health monitor's thread calls its poller every few milliseconds
// instead. A poller ends the records of the operations the device has finished and returns ""
// or an error (NCCL's asynchronous error) that ends the job.
using ActivityPoller = std::function<std::string()>;
int64_t add_poller(ActivityPoller poller);
// After it returns the poller is not running and is not called again.
void remove_poller(int64_t id);
// Runs every poller; the first error, or "".
std::string poll_all();

// "0-3", "0,2,4", "1,4-6": world ranks in increasing order, runs collapsed.
std::string format_ranks(const std::vector<int>& ranks);
// The inverse; an empty or malformed string gives an empty list.
std::vector<int> parse_ranks(const std::string& text);

}  // namespace weft::comm
