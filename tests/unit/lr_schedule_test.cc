// The learning-rate schedules (runtime/train/lr_schedule.h) against their closed forms, written
// out here independently: linear warmup from 0, then constant, linear or cosine decay to the
// floor at the last step.
#include "runtime/train/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace weft::train {
namespace {

TEST(LrSchedule, WarmupThenDecayToTheFloor) {
  const double peak = 3e-3, floor = 3e-4;
  const int64_t warmup = 4, steps = 24;
  for (LrDecay decay : {LrDecay::kConstant, LrDecay::kLinear, LrDecay::kCosine}) {
    const LrSchedule s{decay, peak, warmup, floor, steps};
    for (int64_t step = 1; step <= steps; ++step) {
      double want = 0;
      if (step <= warmup) {
        want = peak * static_cast<double>(step) / 4.0;
      } else {
        const double q = static_cast<double>(step - 4) / 20.0;
        if (decay == LrDecay::kConstant) want = peak;
        if (decay == LrDecay::kLinear) want = floor + (peak - floor) * (1 - q);
        if (decay == LrDecay::kCosine)
          want = floor + (peak - floor) * 0.5 * (1 + std::cos(M_PI * q));
      }
      EXPECT_NEAR(s.at(step), want, 1e-15) << "step " << step;
    }
    EXPECT_NEAR(s.at(warmup), peak, 1e-15);  // the warmup ends at the peak
    if (decay != LrDecay::kConstant) EXPECT_NEAR(s.at(steps), floor, 1e-15);
  }
  // Past the last step (a run extended by --steps on resume keeps the floor).
  EXPECT_NEAR((LrSchedule{LrDecay::kCosine, peak, 0, floor, 10}.at(15)), floor, 1e-15);
}

TEST(LrSchedule, FlagsAreChecked) {
  EXPECT_EQ(parse_lr_decay("cosine").value(), LrDecay::kCosine);
  EXPECT_EQ(parse_lr_decay("").value(), LrDecay::kConstant);
  EXPECT_EQ(parse_lr_decay("exponential").status().message(),
            "--lr-schedule 'exponential': choose constant, linear or cosine");
  EXPECT_FALSE(check_lr_schedule({LrDecay::kCosine, 1e-3, -1, 0, 10}).ok());
  EXPECT_EQ(check_lr_schedule({LrDecay::kCosine, 1e-3, 0, 1e-2, 10}).message(),
            "--min-lr 0.01 must be a finite number in [0, --lr 0.001]");
}

}  // namespace
}  // namespace weft::train
