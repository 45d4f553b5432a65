// `weft eval` and `weft train` under sequence parallelism (--sp with every --sp-attn and
// --sp-linear algorithm, composed with tp, pp and dp) give the one-rank result; the sp group's
// traffic in --comm-report follows docs/algorithms.md (ring and Ulysses grow with the sequence,
// LASP-2 and ZeCO do not; ZeCO sends one state per rank per pass where LASP-2 gathers P-1);
// splits an algorithm cannot make are refused before any work.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

class EvalUnderSp : public ::testing::TestWithParam<const char*> {};

// Logits, loss and every gradient of `weft eval --grads` (T = 24: every sp below splits it).
TEST_P(EvalUnderSp, EveryAlgorithmEqualsOneRank) {
  const std::string model = model_fixture(GetParam());
  const std::string dir = make_temp_dir("weft_eval_sp");
  const int64_t vocab = load_tensor(model + "/reference.safetensors", "logits").dim(2);
  const std::string tokens = write_token_file(dir, random_ids({4, 24}, 7, vocab));
  auto eval = [&](const Mesh& m) { return eval_on_mesh(model, tokens, dir, m); };
  const std::string one = eval({1, ""});
  // Every algorithm and composition on the models whose layers they split differently (GQA
  // softmax attention; linear attention); the tied-embedding and MoE models, whose sp paths are
  // the same attention code, take one mesh of each kind.
  const std::string name = GetParam();
  const bool all = name == "llama_gqa" || name == "hybrid_linear";
  for (const Mesh& m :
       all ? std::vector<Mesh>{{2, "--sp 2"},
                               {3, "--sp 3 --sp-linear lasp2"},
                               {4, "--sp 4"},
                               {2, "--sp 2 --sp-attn ulysses"},
                               {3, "--sp 3 --sp-attn ulysses"},
                               {4, "--sp 4 --sp-attn usp --sp-ulysses 2 --sp-linear lasp2"},
                               {2, "--sp 2 --sp-attn allgather --sp-linear lasp2"},
                               {4, "--sp 2 --tp 2 --sequence-parallel"},
                               {4, "--sp 2 --pp 2 --micro-batch 2"},
                               {4, "--sp 4 --sp-attn auto --sp-linear auto"},
                               {4, "--sp 2 --sp-attn ulysses"},  // dp 2
                               {8, "--sp 2 --tp 2 --pp 2 --micro-batch 2 --sequence-parallel"}}
           : std::vector<Mesh>{{2, "--sp 2"},
                               {3, "--sp 3 --sp-attn ulysses"},
                               {4, "--sp 4 --sp-attn usp --sp-ulysses 2"},
                               {4, "--sp 2 --tp 2 --sequence-parallel"},
                               {4, "--sp 2 --pp 2 --micro-batch 2"}}) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    expect_same_tensors(eval(m), one, 2e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EvalUnderSp,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear"));

// A 4-layer model from its config alone (--init-random): softmax, linear or both.
std::string config_model(const std::string& layer_types) {
  const std::string dir = make_temp_dir("weft_sp_model");
  std::ofstream(dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"],
    "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64, "tie_word_embeddings": true, "layer_types": [)"
                                      << layer_types << "]}";
  return dir;
}

std::string hybrid_model() {
  return config_model(
      R"("linear_attention", "full_attention", "linear_attention", "full_attention")");
}

TEST(TrainUnderSp, LossTrajectoryAndWeightsEqualOneRankAndResumeElsewhere) {
  const std::string model = hybrid_model();
  const std::string one = make_temp_dir("weft_sp_one");
  ASSERT_EQ(run_weft(train_args(model, one, 3)).exit_code, 0);
  for (const Mesh& m : std::vector<Mesh>{{2, "--sp 2"},
                                         {2, "--sp 2 --sp-attn ulysses --sp-linear lasp2"},
                                         {3, "--sp 3"},
                                         {4, "--sp 2 --tp 2 --zero 1"},
                                         {4, "--sp 2 --pp 2 --micro-batch 1"}}) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    const std::string dir = make_temp_dir("weft_sp_train");
    RunResult r = run_weft(absl::StrCat(train_args(model, dir, 3), " ", m.flags), m.ranks);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_run(dir, one);
  }
  // Steps 1-2 at sp 2 with ZeRO-1 over dp x sp, steps 3 at tp 2.
  const std::string dir = make_temp_dir("weft_sp_resume");
  RunResult a = run_weft(absl::StrCat(train_args(model, dir, 2), " --sp 2 --zero 1"), 4);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  RunResult b =
      run_weft(absl::StrCat(train_args(model, dir, 3), " --load ", dir, "/ckpt --tp 2"), 2);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  expect_same_run(dir, one);
}

// The sp group's bytes sent by world rank 0 in one training step.
int64_t sp_bytes(const std::string& model, const std::string& flags, int ranks, int64_t seq_len) {
  const std::string dir = make_temp_dir("weft_sp_bytes");
  const std::string data = write_token_file(dir, random_ids({4, seq_len}, 3, 96));
  const std::string report = dir + "/report.json";
  RunResult r = run_weft(
      absl::StrCat(train_args(model, dir, 1, data, seq_len), " --comm-report ", report, " ", flags),
      ranks);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto json = nlohmann::json::parse(read_text(report));
  return json["ranks"][0]["groups"]["sp"]["bytes_sent"].get<int64_t>();
}

TEST(SpTraffic, RingAndUlyssesGrowWithTheSequenceLinearStatesDoNot) {
  const std::string softmax = config_model(R"("full_attention", "full_attention",
      "full_attention", "full_attention")");
  const std::string linear = config_model(R"("linear_attention", "linear_attention",
      "linear_attention", "linear_attention")");
  for (const auto& [ranks, flags] : std::vector<std::pair<int, std::string>>{
           {2, "--sp 2 --sp-attn ring"},
           {2, "--sp 2 --sp-attn ulysses"},
           {2, "--sp 2 --sp-attn allgather"},
           {4, "--sp 4 --sp-attn usp --sp-ulysses 2"}}) {  // usp's groups count in sp
    SCOPED_TRACE(flags);
    const int64_t at12 = sp_bytes(softmax, flags, ranks, 12);
    const int64_t at24 = sp_bytes(softmax, flags, ranks, 24);
    EXPECT_GT(at12, 0);
    EXPECT_EQ(at24, 2 * at12);  // K/V blocks, heads or K/V gathers: all linear in T
  }
  // One state per linear layer: 4 layers x [B=4, H=4, d=8, d=8] f32.
  const int64_t state = 4 * 4 * 8 * 8 * 4, layers = 4;
  for (int p : {2, 3}) {
    SCOPED_TRACE(p);
    const std::string sp = absl::StrCat("--sp ", p, " --sp-linear ");
    // Rank 0 sends its S_out forward and nothing in the reverse pass: one state per layer.
    EXPECT_EQ(sp_bytes(linear, sp + "zeco", p, 12), layers * state);
    EXPECT_EQ(sp_bytes(linear, sp + "zeco", p, 24), layers * state);
    // LASP-2: the all-gathers of M (forward) and N (backward) move P-1 states each per rank.
    EXPECT_EQ(sp_bytes(linear, sp + "lasp2", p, 12), 2 * layers * (p - 1) * state);
    EXPECT_EQ(sp_bytes(linear, sp + "lasp2", p, 24), 2 * layers * (p - 1) * state);
  }
}

TEST(SpRefusals, ImpossibleSplitsAreRefusedOnEveryRank) {
  const std::string hybrid = hybrid_model();
  const std::string dir = make_temp_dir("weft_sp_bad");
  const std::string base =
      absl::StrCat("train --model ", hybrid, " --init-random --data ", train_tokens(),
                   " --steps 1 --global-batch 4 --seq-len 12", " --metrics ", dir, "/m.jsonl ");
  for (const auto& [ranks, flags, needle] : std::vector<std::tuple<int, std::string, std::string>>{
           {4, "--sp 4", "--sp-attn ring with --sp 4 needs a sequence length divisible by 8"},
           {4, "--sp 4 --sp-attn usp --sp-ulysses 3", "--sp-ulysses 3 does not divide --sp 4"},
           {4, "--sp 4 --sp-attn usp --sp-ulysses 2", "--sp-linear zeco cannot follow"},
           {2, "--sp 2 --sp-attn sliding", "sliding"},
           {2, "--sp 2 --sp-linear gla", "gla"},
           {6, "--sp 3 --tp 2 --sp-attn ulysses", "needs at least as many heads as ranks"},
           {3, "--sp 2", "does not divide the world size 3"}}) {
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
