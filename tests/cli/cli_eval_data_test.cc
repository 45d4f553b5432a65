// `weft train --eval-data F --eval-every N [--eval-batches K]`: the validation loss written as
// eval_loss on evaluation steps equals `weft eval` of the same file with the weights of that
// step (the checkpoint exported), is the same on any mesh, and bad settings are refused.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

using nlohmann::json;

struct Data {
  std::string dir = make_temp_dir("weft_eval_data");
  std::string train = write_token_file(make_temp_dir(dir + "/train"), random_ids({16, 16}, 3, 96));
  std::string eval = write_token_file(make_temp_dir(dir + "/eval"), random_ids({8, 16}, 4, 96));
};

std::string train_args(const Data& d, const std::string& extra) {
  return absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", d.train,
                      " --steps 4 --global-batch 4 --seq-len 16 --lr 1e-3 --eval-data ", d.eval,
                      " ", extra);
}

// step -> eval_loss of the lines that carry one.
std::vector<std::pair<int64_t, double>> eval_losses(const std::string& metrics) {
  std::vector<std::pair<int64_t, double>> out;
  std::istringstream lines(read_text(metrics));
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line);
    if (j.contains("eval_loss")) out.emplace_back(j["step"], j["eval_loss"].get<double>());
  }
  return out;
}

TEST(EvalData, EvalLossEqualsWeftEvalOfTheStepsWeights) {
  Data d;
  const std::string metrics = d.dir + "/metrics.jsonl";
  const RunResult r =
      run_weft(train_args(d, absl::StrCat("--eval-every 2 --metrics ", metrics, " --save ", d.dir,
                                          "/ckpt --save-every 2")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("eval_loss "), std::string::npos) << r.out;
  const auto losses = eval_losses(metrics);
  ASSERT_EQ(losses.size(), 2u);
  EXPECT_EQ(losses[0].first, 2);
  EXPECT_EQ(losses[1].first, 4);
  for (const auto& [step, loss] : losses) {
    char name[32];
    std::snprintf(name, sizeof(name), "/ckpt/step-%08lld", static_cast<long long>(step));
    const std::string hf = absl::StrCat(d.dir, "/hf", step);
    ASSERT_EQ(run_weft(absl::StrCat("ckpt export --from ", d.dir, name, " --to ", hf)).exit_code,
              0);
    const RunResult e = run_weft(absl::StrCat("eval --model ", hf, " --tokens ", d.eval, " --out ",
                                              d.dir, "/eval", step, ".safetensors"));
    ASSERT_EQ(e.exit_code, 0) << e.err;
    double want = 0;
    ASSERT_EQ(std::sscanf(e.out.c_str(), "loss %lf", &want), 1) << e.out;
    EXPECT_NEAR(loss, want, 1e-5 * want) << "step " << step;
  }
  EXPECT_NE(losses[0].second, losses[1].second) << "the weights changed between evaluations";
}

TEST(EvalData, EveryMeshGetsOneRanksEvalLoss) {
  Data d;
  const std::string one = d.dir + "/one.jsonl";
  ASSERT_EQ(run_weft(train_args(d, "--eval-every 1 --eval-batches 1 --metrics " + one)).exit_code,
            0);
  const auto want = eval_losses(one);
  ASSERT_EQ(want.size(), 4u);
  for (const Mesh& mesh : {Mesh{2, "--tp 2"}, Mesh{2, "--pp 2 --micro-batch 1"}}) {
    const std::string out = absl::StrCat(d.dir, "/mesh", mesh.ranks, mesh.flags.size(), ".jsonl");
    const RunResult r = run_weft(
        train_args(
            d, absl::StrCat("--eval-every 1 --eval-batches 1 --metrics ", out, " ", mesh.flags)),
        mesh.ranks);
    ASSERT_EQ(r.exit_code, 0) << mesh.flags << ": " << r.err;
    const auto got = eval_losses(out);
    ASSERT_EQ(got.size(), want.size()) << mesh.flags;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i].second, want[i].second, 1e-5 * want[i].second)
          << mesh.ranks << " ranks " << mesh.flags << ", step " << got[i].first;
    }
  }
}

TEST(EvalData, BadSettingsAreRefused) {
  Data d;
  const std::string short_lines =
      write_token_file(make_temp_dir(d.dir + "/short"), random_ids({8, 12}, 5, 96));
  const std::string few =
      write_token_file(make_temp_dir(d.dir + "/few"), random_ids({2, 16}, 6, 96));
  struct Case {
    std::string args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", d.train,
                    " --steps 2 --global-batch 4 --seq-len 16 --eval-data ", short_lines),
       "has sequences of 12 tokens, --seq-len is 16"},
      {absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", d.train,
                    " --steps 2 --global-batch 4 --seq-len 16 --eval-data ", few),
       "has 2 sequences, fewer than one --global-batch (4)"},
      {train_args(d, "--eval-batches 3"), "--eval-batches 3 needs 12 sequences"},
      {absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", d.train,
                    " --steps 2 --global-batch 4 --seq-len 16 --eval-every 2"),
       "--eval-every and --eval-batches need --eval-data"},
  };
  for (const Case& c : cases) {
    const RunResult r = run_weft(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
  }
}

}  // namespace
}  // namespace weft::testing
