// Failure detection for a multi-rank run (docs/operations.md, "Failure detection"): a rank that
// dies, is stopped, or hangs makes every other rank exit within about --comm-timeout seconds,
// with a message naming the rank and the collective, instead of waiting forever.
//
// Every rank runs a heartbeat thread on its own duplicate of MPI_COMM_WORLD. Each rank sends
// rank 0 a beat every timeout/8 seconds (at most 2 s) carrying what it is doing (comm/activity.h:
// the operation in progress and for how long, or the last one completed); rank 0 beats back to
// every rank. Then:
//   - rank 0 hears nothing from rank r for `timeout` seconds: r died or is stopped;
//   - a rank has waited `timeout` seconds in a collective that is not an idle wait: rank 0 names
//     the members of that collective's group that are not in it (computing, in another
//     operation, or finished), or, for a receive, the sender;
//   - a rank hears nothing from rank 0 for `timeout` seconds: rank 0 died or is stopped.
// The rank that sees it prints one line to stderr and ends the job with MPI_Abort and exit code
// kExitCommFailure. A rank that ended with an error the others did not see (they still wait in
// a collective with it) ends the job at once, with its exit code. On a normal exit every rank
// reports that it finished and waits until rank 0 has heard from all of them, so no beat is left
// unreceived when MPI finalises.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace weft::comm {

// The exit code of a run ended because a peer died or hung: the job may be resubmitted to resume
// from its newest checkpoint.
inline constexpr int kExitCommFailure = 76;

class HealthMonitor {
 public:
  // Collective over MPI_COMM_WORLD; `timeout_s` > 0. `pending_signal` (optional) returns the
  // termination signal the process has received, or 0: when one arrives, the monitor prints what
  // this rank is in and, on rank 0, the last report of every rank that has gone silent — when a
  // launcher ends the job because a rank died, that names the dead rank's last collective.
  static std::unique_ptr<HealthMonitor> start(double timeout_s,
                                              std::function<int()> pending_signal = nullptr);
  // finish(0) unless finish() was called.
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // Reports that this rank is done (with `exit_code`), then returns once every rank has reported
  // it (or ends the job if a rank dies or hangs first).
  void finish(int exit_code);

  // Rank 0: asks every rank for a beat now and waits up to `wait_s` for the answers; returns the
  // ranks that sent none (dead or stopped), ascending. This tells a launcher's SIGTERM after a
  // rank died (mpirun's, after a kill -9) from a user's SIGTERM, which every rank answers.
  [[nodiscard]] std::vector<int> unresponsive_ranks(double wait_s);
  // `hook` runs on the monitor's thread when it is about to end the job over a dead or hung rank,
  // with the message it would print; when the hook returns, the job ends as before. A server
  // uses it to answer its clients first.
  void set_failure_hook(std::function<void(const std::string&)> hook);

  // Rank 0: what to do when rank r dies (silent for the timeout) while the job may go on without
  // it — a disaggregated server with another decode instance, under `mpirun --enable-recovery`
  // (docs/operations.md "Failure detection"). `handler(r, message)` runs on the monitor's thread
  // and returns the ranks to write off (r and the live ranks that cannot go on without it), or
  // nothing to end the job as before. Written-off ranks are no longer watched or waited for;
  // the live ones among them are told to exit (kExitCommFailure), and every other rank learns of
  // the loss (lost_ranks()).
  void set_loss_handler(std::function<std::vector<int>(int, const std::string&)> handler);
  // The ranks written off so far, ascending; on ranks > 0, as rank 0 has told them.
  [[nodiscard]] std::vector<int> lost_ranks() const;
  // Whether world rank `rank` is among them (cheap: for polling loops).
  [[nodiscard]] bool is_lost(int rank) const;

  class Impl;

 private:
  explicit HealthMonitor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::comm
