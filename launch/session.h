// What every subcommand runs inside: MPI, the world communicator, and the rule for errors.
//
// Errors: a subcommand returns a Status. Fallible phases (flags, files, model loading) end with
// agree(), so when any rank fails every rank learns it: the lowest failing rank prints its one
// message, and every rank exits 1 — no hang, no crash.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "comm/health_monitor.h"

namespace weft::cli {

class Session {
 public:
  explicit Session(std::unique_ptr<comm::Communicator> world);

  [[nodiscard]] comm::Communicator& world() { return *world_; }
  [[nodiscard]] int rank() const { return world_->rank(); }
  [[nodiscard]] int size() const { return world_->size(); }
  [[nodiscard]] bool is_root() const { return rank() == 0; }

  // Makes `device` (--device) where tensors are allocated by default (default_device(),
  // runtime/core/device.h) and sets the world the model communicates over: the world itself on
  // the CPU and the emulated GPU, a hybrid of MPI and NCCL on a GPU (comm/hybrid_communicator.h).
  // Collective.
  void use_device(Device device);
  [[nodiscard]] comm::Communicator& compute_world() {
    return compute_world_ != nullptr ? *compute_world_ : *world_;
  }

  // Collective over the world: OK on every rank iff `local` is OK on every rank. A failing rank
  // gets its own status back; the others get a status marked as already reported.
  absl::Status agree(absl::Status local);

  // Failure detection (comm/health_monitor.h) with --comm-timeout `timeout_s`, started once:
  // collective; nothing on one rank or with a timeout of 0.
  void watch_health(double timeout_s);
  // This rank is done: waits until every rank is (HealthMonitor::finish). Also done by the
  // destructor.
  void finish(int exit_code);
  // The running health monitor, or null (one rank, or --comm-timeout 0).
  [[nodiscard]] comm::HealthMonitor* health() { return health_.get(); }

 private:
  std::unique_ptr<comm::Communicator> world_;
  std::unique_ptr<comm::Communicator> compute_world_;
  std::unique_ptr<comm::HealthMonitor> health_;
  bool health_started_ = false;
};

// True for a status that agree() returned on a rank that did not fail itself.
bool reported_elsewhere(const absl::Status& status);

}  // namespace weft::cli
