// Bad input gets one clear message naming the problem on stderr and exit code 1 — on one rank
// and under mpirun (every rank exits; none hangs; the message is printed once).
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

namespace fs = std::filesystem;

// Copy of a fixture model directory that a test may break.
std::string copy_model(const std::string& name) {
  const std::string dir = make_temp_dir("weft_bad_model") + "/" + name;
  fs::copy(model_fixture(name), dir, fs::copy_options::recursive);
  return dir;
}

void expect_error(const std::string& args, const std::string& needle) {
  for (int ranks : {1, 2}) {
    SCOPED_TRACE(absl::StrCat(ranks, " rank(s): weft ", args));
    RunResult r = run_weft(args, ranks, 120);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
    size_t count = 0;
    for (size_t at = r.err.find("error:"); at != std::string::npos;
         at = r.err.find("error:", at + 1)) {
      ++count;
    }
    EXPECT_EQ(count, 1u) << "one message, printed once: " << r.err;
  }
}

std::string eval_args(const std::string& model, const std::string& tokens) {
  return absl::StrCat("eval --model ", model, " --tokens ", tokens, " --out ",
                      make_temp_dir("weft_bad_out"), "/out.safetensors");
}

std::string good_tokens() {
  return write_token_file(make_temp_dir("weft_tokens"), random_ids({4, 8}, 1, 50));
}

TEST(BadInput, MissingModelDirectory) {
  expect_error(eval_args("/nonexistent/model", good_tokens()), "/nonexistent/model");
}

TEST(BadInput, TruncatedSafetensors) {
  const std::string dir = copy_model("llama_gqa");
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  expect_error(eval_args(dir, good_tokens()), "model.safetensors");
}

TEST(BadInput, GarbageSafetensors) {
  const std::string dir = copy_model("llama_gqa");
  std::ofstream(dir + "/model.safetensors", std::ios::trunc) << "this is not a safetensors file";
  expect_error(eval_args(dir, good_tokens()), "model.safetensors");
}

TEST(BadInput, ConfigShapesDisagreeWithWeights) {
  const std::string dir = copy_model("llama_gqa");
  std::string config = read_text(dir + "/config.json");
  const std::string from = "\"intermediate_size\": 112";
  ASSERT_NE(config.find(from), std::string::npos) << config;
  config.replace(config.find(from), from.size(), "\"intermediate_size\": 120");
  std::ofstream(dir + "/config.json", std::ios::trunc) << config;
  expect_error(eval_args(dir, good_tokens()), "gate_proj");
}

TEST(BadInput, TokenIdOutOfRange) {
  const std::string dir = make_temp_dir("weft_bad_ids");
  std::ofstream(dir + "/t.txt") << "1 2 3 4\n5 6 96 7\n";
  expect_error(eval_args(model_fixture("llama_gqa"), dir + "/t.txt"), "96");
}

TEST(BadInput, RaggedTokenFile) {
  const std::string dir = make_temp_dir("weft_bad_ids");
  std::ofstream(dir + "/t.txt") << "1 2 3 4\n5 6 7\n";
  expect_error(eval_args(model_fixture("llama_gqa"), dir + "/t.txt"), "t.txt:2");
}

TEST(BadInput, UnknownFlagAndSubcommand) {
  expect_error("eval --modle x", "unknown flag --modle");
  expect_error("frobnicate", "unknown subcommand 'frobnicate'");
  expect_error("generate --model x --prompt-ids 1 --max-new-tokens many", "--max-new-tokens");
}

TEST(BadInput, ShiftParallelSpansEveryRankAndWholeHeads) {
  const std::string gen = absl::StrCat("generate --model ", model_fixture("llama_gqa"),
                                       " --prompt-ids 1,2 ", "--max-new-tokens 2");
  expect_error(gen + " --sp 2", "--sp applies to --shift-parallel");
  expect_error(gen + " --shift-parallel --sp 3", "--shift-parallel --sp 3 --tp 1 on");
  expect_error(gen + " --shift-parallel --pp 2", "--shift-parallel runs on --sp ranks alone");
  expect_error(gen + " --prefill-ranks 1 --decode-ranks 1", "is for weft serve");
  expect_error(absl::StrCat("serve --model ", model_fixture("llama_gqa"),
                            " --prefill-ranks 3 --decode-ranks 3"),
               "--prefill-ranks 3 + --decode-ranks 3 must be the");
  // 2 ranks: one prefill rank holds no prefill instance of tp 2.
  RunResult split = run_weft(absl::StrCat("serve --model ", model_fixture("llama_gqa"),
                                          " --prefill-ranks 1 --decode-ranks 1 --prefill-tp 2"),
                             2, 120);
  EXPECT_EQ(split.exit_code, 1) << split.err;
  EXPECT_NE(split.err.find("--prefill-tp 2 does not divide --prefill-ranks 1"), std::string::npos)
      << split.err;
  // 4 ranks: tp 4 replicates the 2 KV heads, which Ulysses cannot split.
  RunResult r = run_weft(gen + " --shift-parallel", 4, 120);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--shift-parallel over 4 ranks: 4 heads and 2 KV heads"), std::string::npos)
      << r.err;
}

// Help and version are not errors: `weft --version`, and --help of every subcommand and ckpt
// action, exit 0 and print to stdout.
TEST(Cli, VersionAndEveryHelpExitZero) {
  RunResult version = run_weft("--version");
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_EQ(version.out.rfind("weft ", 0), 0u) << version.out;
  EXPECT_NE(version.out.find("(commit "), std::string::npos) << version.out;
  for (const char* args :
       {"--help", "eval --help", "train --help", "generate --help", "serve --help",
        "tokenize --help", "moe --help", "ckpt --help", "ckpt inspect --help", "ckpt verify --help",
        "ckpt export --help", "ckpt reshard --help", "plan --help", "data --help",
        "data prepare --help", "data verify --help", "data info --help"}) {
    SCOPED_TRACE(args);
    RunResult r = run_weft(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(r.out.empty());
  }
  const std::string usage = run_weft("--help").out;
  EXPECT_NE(usage.find("reshard"), std::string::npos);
  EXPECT_NE(usage.find("plan"), std::string::npos);
  EXPECT_NE(usage.find("\n  data "), std::string::npos) << usage;
}

// `weft plan`: a table and a pick that `weft train` accepts; one layout with --mesh; no fit, a
// mesh the model does not allow and a bad size are errors that name the problem.
TEST(Cli, PlanPicksALayoutAndRefusesWhatCannotFit) {
  const std::string plan = absl::StrCat("plan --model ", model_fixture("llama_gqa"),
                                        " --ranks 2 --seq-len 16 "
                                        "--global-batch 8 --flops-per-core 1e10");
  RunResult r = run_weft(plan + " --memory 64MiB");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const size_t pick = r.out.find("pick: --tp ");
  ASSERT_NE(pick, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layouts fit"), std::string::npos) << r.out;
  // The picked flags train.
  const std::string flags = r.out.substr(pick + 6, r.out.find(", predicted", pick) - pick - 6);
  const std::string tokens =
      write_token_file(make_temp_dir("weft_plan_tokens"), random_ids({8, 16}, 2, 96));
  RunResult train =
      run_weft(absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", tokens,
                            " --steps 1 --global-batch 8 --seq-len 16 ", flags),
               2);
  EXPECT_EQ(train.exit_code, 0) << flags << "\n" << train.err;
  RunResult one = run_weft(plan + " --mesh tp=2 --recompute full --json");
  EXPECT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("\"mesh\":\"tp=2,pp=1,sp=1,dp=1\""), std::string::npos) << one.out;
  expect_error(plan + " --memory 1KiB", "no layout of 2 ranks fits 0.0 MiB per rank");
  expect_error(plan + " --mesh tp=3", "does not divide the 2 ranks");
  expect_error(plan + " --mesh pp=2,dp=2", "is not the 2 ranks");
  expect_error(plan + " --memory lots", "'lots' is not a size");
}

TEST(BadInput, TrainSeqLenDisagreesWithData) {
  const std::string dir = make_temp_dir("weft_bad_train");
  expect_error(absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", good_tokens(),
                            " --steps 2 --global-batch 2 --seq-len 16"),
               "--seq-len 16");
}

TEST(BadInput, LoadFromMissingCheckpoint) {
  expect_error(absl::StrCat("train --load /nonexistent/ckpt --data ", good_tokens(),
                            " --steps 2 --global-batch 2 --seq-len 8"),
               "/nonexistent/ckpt");
}

}  // namespace
}  // namespace weft::testing
