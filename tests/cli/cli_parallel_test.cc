// `weft eval` and `weft train` under tensor, pipeline (1F1B and interleaved), sequence and data
// parallelism and ZeRO-1 give the one-rank result; a run saved on one mesh resumes on another;
// impossible meshes are refused before any work, on every rank.
#include <gtest/gtest.h>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

class EvalMeshes : public ::testing::TestWithParam<const char*> {};

TEST_P(EvalMeshes, EveryMeshEqualsOneRank) {
  const std::string model = model_fixture(GetParam());
  const std::string dir = make_temp_dir("weft_eval_mesh");
  const int64_t vocab = load_tensor(model + "/reference.safetensors", "logits").dim(2);
  const std::string tokens = write_token_file(dir, random_ids({8, 12}, 5, vocab));
  auto eval = [&](const Mesh& m) { return eval_on_mesh(model, tokens, dir, m); };
  const std::string one = eval({1, ""});
  for (const Mesh& m : std::vector<Mesh>{{2, "--tp 2"},
                                         {2, "--pp 2 --micro-batch 2"},
                                         {4, "--tp 2 --pp 2 --micro-batch 4 --sequence-parallel"},
                                         {4, "--pp 2 --micro-batch 2"}}) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    expect_same_tensors(eval(m), one, 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EvalMeshes,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear"));

// A 4-layer Llama (config only; --init-random), so that pp=4 and pp=2 x 2 chunks are possible.
std::string four_layer_model() { return llama_config_model(96, 4); }

TEST(TrainMeshes, EveryMeshEqualsOneRank) {
  expect_meshes_train_alike(four_layer_model(),
                            {{2, "--tp 2"},
                             {2, "--pp 2 --micro-batch 1"},
                             {2, "--pp 2 --pp-virtual 2 --micro-batch 2"},
                             {4, "--pp 4 --micro-batch 1"},
                             {4, "--tp 2 --pp 2 --micro-batch 1 --sequence-parallel"},
                             {4, "--tp 2 --zero 1"},
                             {2, "--zero 1 --micro-batch 1"},
                             {2, "--micro-batch 1 --sync-grad-reduce"}},
                            3);
}

TEST(TrainMeshes, ResumesUnderAnotherMesh) {
  const std::string model = four_layer_model();
  const std::string straight = make_temp_dir("weft_straight");
  ASSERT_EQ(run_weft(train_args(model, straight, 4)).exit_code, 0);
  // Steps 1-2 on one mesh, saved; steps 3-4 loaded on another: tp2 x pp2 -> pp4,
  // tp2 x pp2 -> dp2, and ZeRO-1 over dp2 (moment rows sharded) -> tp2.
  for (const auto& [first, then] : std::vector<std::pair<Mesh, Mesh>>{
           {{4, "--tp 2 --pp 2 --micro-batch 1"}, {4, "--pp 4 --micro-batch 1"}},
           {{4, "--tp 2 --pp 2 --micro-batch 1"}, {2, ""}},
           {{2, "--zero 1"}, {2, "--tp 2"}}}) {
    SCOPED_TRACE(absl::StrCat(first.flags, " -> ", then.flags));
    const std::string dir = make_temp_dir("weft_reshard_resume");
    RunResult a = run_weft(absl::StrCat(train_args(model, dir, 2), " ", first.flags), first.ranks);
    ASSERT_EQ(a.exit_code, 0) << a.err;
    RunResult b = run_weft(
        absl::StrCat(train_args(model, dir, 4), " --load ", dir, "/ckpt ", then.flags), then.ranks);
    ASSERT_EQ(b.exit_code, 0) << b.err;
    expect_same_run(dir, straight);
  }
}

TEST(TrainMeshes, OfflineReshardThenLoad) {
  const std::string model = four_layer_model();
  const std::string straight = make_temp_dir("weft_straight");
  ASSERT_EQ(run_weft(train_args(model, straight, 4)).exit_code, 0);
  const std::string dir = make_temp_dir("weft_offline");
  ASSERT_EQ(run_weft(train_args(model, dir, 2)).exit_code, 0);
  RunResult r = run_weft(absl::StrCat("ckpt reshard --from ", dir, "/ckpt --to ", dir,
                                      "/resharded --to-mesh tp=2,pp=2,dp=1"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(run_weft(absl::StrCat("ckpt verify --from ", dir, "/resharded")).exit_code, 0);
  RunResult b = run_weft(absl::StrCat(train_args(model, dir, 4), " --load ", dir,
                                      "/resharded --tp 2 --pp 2 --micro-batch 1"),
                         4);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  expect_same_run(dir, straight);
}

TEST(TrainMeshes, ImpossibleMeshesAreRefusedOnEveryRank) {
  const std::string llama = model_fixture("llama_gqa");  // 4 heads, 2 kv heads, 2 layers
  const std::string dir = make_temp_dir("weft_bad_mesh");
  const std::string base =
      absl::StrCat("train --model ", llama, " --data ", train_tokens(),
                   " --steps 1 --global-batch 4 --seq-len 12 --metrics ", dir, "/m.jsonl ");
  for (const auto& [ranks, flags, needle] : std::vector<std::tuple<int, std::string, std::string>>{
           {3, "--tp 3", "--tp 3 does not divide num_attention_heads 4"},
           {4, "--pp 4", "4 pipeline stages for 2 layers"},
           {2, "--tp 2 --pp 2", "does not divide the world size 2"},
           {2, "--pp 2 --pp-virtual 2 --micro-batch 1", "pipeline stages for 2 layers"},
           {2, "--micro-batch 3", "--micro-batch 3 does not divide"}}) {
    SCOPED_TRACE(flags);
    RunResult r = run_weft(base + flags, ranks, 120);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("error:"), r.err.rfind("error:")) << "printed once: " << r.err;
    EXPECT_EQ(read_text(dir + "/m.jsonl"), "") << "no step may run";
  }
}

}  // namespace
}  // namespace weft::testing
