// The learning rate of each step (`--lr-schedule`, `--warmup-steps`, `--min-lr`,
// `--lr-decay-steps`; Megatron-LM's semantics). Step s = 1, 2, ...; `steps` = --lr-decay-steps
// (default --steps), where the decay reaches the floor; peak = --lr:
//   s <= warmup:  peak * s / warmup (linear warmup from 0)
//   after:        progress q = (s - warmup) / (steps - warmup), in [0, 1]
//     constant:   peak
//     linear:     min + (peak - min) * (1 - q)
//     cosine:     min + (peak - min) * (1 + cos(pi q)) / 2
// A pure function of the step, so a resumed run continues the same curve (give a run stopped
// early --lr-decay-steps of the whole run). Past `steps` it stays at the floor.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace weft::train {

enum class LrDecay { kConstant, kLinear, kCosine };

struct LrSchedule {
  LrDecay decay = LrDecay::kConstant;
  double peak = 1e-3;
  int64_t warmup_steps = 0;
  double min_lr = 0;
  int64_t steps = 0;

  [[nodiscard]] double at(int64_t step) const;
};

// "constant" / "linear" / "cosine"; an error naming the flag and the choices otherwise.
absl::StatusOr<LrDecay> parse_lr_decay(const std::string& name);
// The values against each other: warmup >= 0, 0 <= min_lr <= peak. Errors name the flags.
absl::Status check_lr_schedule(const LrSchedule& s);

}  // namespace weft::train
