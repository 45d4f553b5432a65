// `weft train --lr-schedule cosine --warmup-steps N --min-lr X`: the metrics' lr of every step is
// the schedule's (tests/unit/lr_schedule_test.cc holds the formulas), on one rank and on two; a
// run stopped and resumed from its checkpoint continues the same curve and ends with the same
// weights as one run; a bad schedule name is refused by name.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/train/lr_schedule.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

std::vector<double> lrs(const std::string& dir) {
  std::vector<double> out;
  std::istringstream lines(read_text(dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    out.push_back(nlohmann::json::parse(line)["lr"].get<double>());
  }
  return out;
}

TEST(LrScheduleTrain, MetricsFollowTheScheduleAndResumeContinuesIt) {
  const std::string model = llama_config_model(96, 2);
  const std::string schedule = " --lr-schedule cosine --warmup-steps 2 --min-lr 1e-3";
  const train::LrSchedule want{train::LrDecay::kCosine, 1e-2, 2, 1e-3, 6};
  for (int ranks : {1, 2}) {
    SCOPED_TRACE(ranks);
    const std::string dir = make_temp_dir("weft_lr");
    RunResult r = run_weft(train_args(model, dir, 6) + schedule, ranks);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::vector<double> got = lrs(dir);
    ASSERT_EQ(got.size(), 6u);
    for (int step = 1; step <= 6; ++step) {
      // The optimizer holds the peak lr in f32.
      EXPECT_NEAR(got[step - 1], want.at(step), 1e-7 * want.at(step)) << "step " << step;
    }
  }
  // 3 steps of a 6-step decay (--lr-decay-steps), then resumed to 6: the same lr curve and the
  // same run as 6 steps at once.
  const std::string once = make_temp_dir("weft_lr_once");
  ASSERT_EQ(run_weft(train_args(model, once, 6) + schedule).exit_code, 0);
  const std::string split = make_temp_dir("weft_lr_split");
  ASSERT_EQ(run_weft(train_args(model, split, 3) + schedule + " --lr-decay-steps 6").exit_code, 0);
  RunResult resumed =
      run_weft(train_args(model, split, 6) + schedule + " --load " + split + "/ckpt");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(lrs(split), lrs(once));
  expect_same_run(split, once);
}

TEST(LrScheduleTrain, UnknownScheduleIsNamed) {
  const std::string dir = make_temp_dir("weft_lr_bad");
  RunResult r = run_weft(train_args(llama_config_model(96, 2), dir, 2) + " --lr-schedule step");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--lr-schedule 'step': choose constant, linear or cosine"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace weft::testing
