// `weft train --token-weave` (docs/algorithms.md "TokenWeave in training"): at tp 2 and tp 4 the
// loss of every step and the final weights equal the one-rank run and Megatron-SP's
// (expect_same_run: 1e-5, the f32 order of the halves' partial weight-gradient sums); the tp
// group's --comm-report shows Megatron-SP's bytes in twice the all-gather and reduce-scatter
// calls; runs it cannot make are refused before any step.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

// Rank 0's tp traffic of one kind in a --comm-report: {calls, bytes_sent}.
std::pair<int64_t, int64_t> tp_traffic(const std::string& report, const std::string& kind) {
  const auto json = nlohmann::json::parse(read_text(report));
  const auto& k = json["ranks"][0]["groups"]["tp"]["by_kind"][kind];
  return {k["calls"].get<int64_t>(), k["bytes_sent"].get<int64_t>()};
}

TEST(TrainTokenWeave, EqualsMegatronSpAndOneRankWithMegatronSpBytes) {
  const std::string model = llama_config_model(96, 2);
  const std::string one = make_temp_dir("weft_weave_one");
  RunResult base = run_weft(train_args(model, one, 2));
  ASSERT_EQ(base.exit_code, 0) << base.err;
  std::map<std::string, std::string> dirs;
  for (const Mesh& m : std::vector<Mesh>{{2, "--tp 2 --sequence-parallel"},
                                         {2, "--tp 2 --token-weave"},
                                         {4, "--tp 4 --token-weave"}}) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    const std::string dir = make_temp_dir("weft_weave_mesh");
    RunResult r = run_weft(
        absl::StrCat(train_args(model, dir, 2), " --comm-report ", dir, "/report.json ", m.flags),
        m.ranks);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_run(dir, one);
    dirs[m.flags] = dir;
  }
  const std::string sp = dirs["--tp 2 --sequence-parallel"] + "/report.json";
  const std::string weave = dirs["--tp 2 --token-weave"] + "/report.json";
  for (const char* kind : {"all_gather", "reduce_scatter", "all_reduce"}) {
    SCOPED_TRACE(kind);
    const auto [sp_calls, sp_bytes] = tp_traffic(sp, kind);
    const auto [weave_calls, weave_bytes] = tp_traffic(weave, kind);
    EXPECT_GT(sp_bytes, 0);
    EXPECT_EQ(weave_bytes, sp_bytes);
    EXPECT_EQ(weave_calls, std::string(kind) == "all_reduce" ? sp_calls : 2 * sp_calls);
  }
}

// The model's refusals are tested in-process (tests/mpi/token_weave_train_test.cc); here the
// command line's: an error naming the problem, exit code 1, no step.
TEST(TrainTokenWeave, UnsupportedRunsAreRefusedBeforeAnyStep) {
  const std::string dir = make_temp_dir("weft_weave_refused");
  for (const auto& [ranks, flags, needle] : std::vector<std::tuple<int, std::string, std::string>>{
           {1, "--token-weave", "--token-weave needs --tp 2 or more"},
           {2, "--tp 2 --token-weave --micro-batch 1",
            "a micro-batch of 1 sequence has none to split"}}) {
    SCOPED_TRACE(flags);
    const std::string metrics = dir + "/m.jsonl";
    RunResult r = run_weft(absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ",
                                        train_tokens(), " --steps 1 --global-batch 4 --seq-len 12",
                                        " --metrics ", metrics, " ", flags),
                           ranks, 120);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(read_text(metrics), "") << "no step may run";
  }
}

}  // namespace
}  // namespace weft::testing
