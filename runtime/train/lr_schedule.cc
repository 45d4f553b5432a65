#include "runtime/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"

namespace weft::train {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) {
    return peak * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  if (decay == LrDecay::kConstant) return peak;
  const int64_t span = steps - warmup_steps;
  const double q =
      span > 0 ? std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(span),
                            0.0, 1.0)
               : 1.0;
  const double factor =
      decay == LrDecay::kLinear ? 1.0 - q : 0.5 * (1.0 + std::cos(std::numbers::pi * q));
  return min_lr + (peak - min_lr) * factor;
}

absl::StatusOr<LrDecay> parse_lr_decay(const std::string& name) {
  if (name.empty() || name == "constant") return LrDecay::kConstant;
  if (name == "linear") return LrDecay::kLinear;
  if (name == "cosine") return LrDecay::kCosine;
  return absl::InvalidArgumentError(
      absl::StrCat("--lr-schedule '", name, "': choose constant, linear or cosine"));
}

absl::Status check_lr_schedule(const LrSchedule& s) {
  if (s.warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--warmup-steps ", s.warmup_steps, " must be >= 0"));
  }
  if (!(s.min_lr >= 0) || !std::isfinite(s.min_lr) || s.min_lr > s.peak) {
    return absl::InvalidArgumentError(
        absl::StrCat("--min-lr ", s.min_lr, " must be a finite number in [0, --lr ", s.peak, "]"));
  }
  return absl::OkStatus();
}

}  // namespace weft::train
