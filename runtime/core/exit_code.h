// A failure that asks the process for a particular exit code (the `weft` binary exits 1 for
// every other error): a run stopped by SIGTERM exits with a code the Slurm template requeues on.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"

namespace weft {

inline constexpr char kExitCodePayload[] = "weft.exit_code";

inline absl::Status with_exit_code(absl::Status status, int code) {
  status.SetPayload(kExitCodePayload, absl::Cord(std::to_string(code)));
  return status;
}

inline std::optional<int> requested_exit_code(const absl::Status& status) {
  const auto payload = status.GetPayload(kExitCodePayload);
  int code = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &code)) return std::nullopt;
  return code;
}

}  // namespace weft
