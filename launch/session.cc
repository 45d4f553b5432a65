#include "launch/session.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "comm/hybrid_communicator.h"
#include "runtime/train/stop_signal.h"

namespace weft::cli {
namespace {

constexpr char kReportedElsewhere[] = "weft.reported_elsewhere";

}  // namespace

Session::Session(std::unique_ptr<comm::Communicator> world) : world_(std::move(world)) {}

void Session::use_device(Device device) {
  set_default_device(device);
  compute_world_ = comm::device_communicator(*world_, device);
}

absl::Status Session::agree(absl::Status local) {
  if (size() == 1) return local;
  // [0] = 1 if this rank failed; [1] = -rank of a failing rank (max = lowest failing rank).
  Tensor flags = Tensor::empty({2}, DType::kI32, Device::cpu());
  flags.data<int32_t>()[0] = local.ok() ? 0 : 1;
  flags.data<int32_t>()[1] = local.ok() ? -size() : -rank();
  world_->all_reduce(flags, comm::ReduceOp::kMax);
  if (flags.data<int32_t>()[0] == 0) return absl::OkStatus();
  const int reporter = -flags.data<int32_t>()[1];
  if (!local.ok() && reporter == rank()) return local;
  absl::Status quiet = absl::AbortedError(absl::StrCat("rank ", reporter, " failed"));
  quiet.SetPayload(kReportedElsewhere, absl::Cord("1"));
  return quiet;
}

void Session::watch_health(double timeout_s) {
  if (health_started_) return;
  health_started_ = true;
  if (size() > 1 && timeout_s > 0) {
    health_ = comm::HealthMonitor::start(timeout_s, train::stop_signal_received);
  }
}

void Session::finish(int exit_code) {
  if (health_ != nullptr) health_->finish(exit_code);
}

bool reported_elsewhere(const absl::Status& status) {
  return status.GetPayload(kReportedElsewhere).has_value();
}

}  // namespace weft::cli
