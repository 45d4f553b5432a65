// StreamBP (docs/algorithms.md "StreamBP"): --streambp CHUNK runs the LM head and loss over
// CHUNK rows at a time and each decoder layer's backward chunk by chunk of CHUNK positions from
// its kept input. Exact: eval with --grads and 4-step training equal the runs without it for
// chunk sizes that divide T, that do not, of one position and of more than T; for dense, MoE
// (with its load-balancing loss) and hybrid linear-attention models; on one rank and with tp,
// Megatron-SP, pp, dp + ZeRO-1 and expert parallelism. The accounted peak memory falls below
// full recomputation's; what it cannot serve (--sp, MoE capacity) is refused by name.
#include <gtest/gtest.h>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

TEST(StreamBpEval, ChunkWiseBackwardGivesTheSameLossAndGradients) {
  for (const auto& [fixture, meshes] : std::vector<std::pair<std::string, std::vector<Mesh>>>{
           {"llama_gqa",
            {{1, ""}, {2, "--tp 2"}, {2, "--tp 2 --sequence-parallel"}, {2, "--pp 2"}}},
           {"mixtral_moe",
            {{1, ""},
             {2, "--ep 2"},
             {2, "--tp 2 --ep 2"},
             {2, "--tp 2 --ep 2 --sequence-parallel"}}},
           {"hybrid_linear", {{1, ""}, {2, "--tp 2"}, {2, "--tp 2 --sequence-parallel"}}}}) {
    SCOPED_TRACE(fixture);
    const std::string model = model_fixture(fixture);
    const std::string dir = make_temp_dir("weft_streambp_eval");
    const int64_t vocab = load_tensor(model + "/reference.safetensors", "logits").dim(2);
    // 3 sequences of 12: chunks of 1, 4 (dividing T), 5 (not), 12 (= T) and 64 (> T).
    const std::string tokens = write_token_file(dir, random_ids({3, 12}, 11, vocab));
    for (const Mesh& m : meshes) {
      SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
      const std::string plain = eval_on_mesh(model, tokens, dir, m);
      for (int chunk : {1, 4, 5, 12, 64}) {
        SCOPED_TRACE(chunk);
        const std::string again = eval_on_mesh(
            model, tokens, dir, {m.ranks, absl::StrCat(m.flags, " --streambp ", chunk)});
        expect_same_tensors(again, plain, 1e-5);
      }
    }
  }
}

// Token data of 8 sequences of 12 within `vocab`.
std::string token_data(int64_t vocab) {
  const std::string dir = make_temp_dir("weft_streambp_data");
  return write_token_file(dir, random_ids({8, 12}, 5, vocab));
}

// 4 steps of a model trained from `data` with `extra` flags and then on each mesh: every mesh's
// run equals the one-rank run without StreamBP.
void expect_streamed_training_alike(const std::string& model, const std::string& data,
                                    const std::vector<Mesh>& meshes, const std::string& extra) {
  const std::string one = make_temp_dir("weft_streambp_one");
  RunResult base = run_weft(absl::StrCat(train_args(model, one, 4, data), " ", extra));
  ASSERT_EQ(base.exit_code, 0) << base.err;
  for (const Mesh& m : meshes) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    const std::string dir = make_temp_dir("weft_streambp_mesh");
    RunResult r =
        run_weft(absl::StrCat(train_args(model, dir, 4, data), " ", extra, " ", m.flags), m.ranks);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_run(dir, one);
  }
}

TEST(StreamBpTrain, DenseTrainsAsWithout) {
  expect_streamed_training_alike(llama_config_model(96, 4), token_data(96),
                                 {{1, "--streambp 1"},
                                  {1, "--streambp 5"},
                                  {1, "--streambp 5 --recompute full"},
                                  {2, "--streambp 4 --tp 2"},
                                  {2, "--streambp 5 --tp 2 --sequence-parallel"},
                                  {2, "--streambp 5 --zero 1 --micro-batch 1"},
                                  {2, "--streambp 7 --pp 2 --micro-batch 1"}},
                                 "");
}

TEST(StreamBpTrain, MoeWithItsLoadBalancingLossTrainsAsWithout) {
  expect_streamed_training_alike(model_fixture("mixtral_moe"), token_data(64),
                                 {{1, "--streambp 5"},
                                  {2, "--streambp 4 --ep 2"},
                                  {2, "--streambp 3 --tp 2 --ep 2 --sequence-parallel"}},
                                 "--moe-aux-loss-coef 0.05");
}

TEST(StreamBpTrain, HybridLinearAttentionTrainsAsWithout) {
  expect_streamed_training_alike(model_fixture("hybrid_linear"), token_data(72),
                                 {{1, "--streambp 5"}, {2, "--streambp 3 --tp 2"}}, "");
}

// A vocabulary of 4096 (ids below 96 in the data): the [N, V] logits and their gradient are
// the largest activation, and --streambp never keeps them.
TEST(StreamBpMemory, ChunkedLossHeadLowersThePeakMemory) {
  const std::string dir = llama_config_model(4096, 2);
  const int64_t none = train_peak_bytes(dir, "");
  const int64_t chunked = train_peak_bytes(dir, "--streambp 16");
  // 256 rows x 4096 x 4 bytes = 4 MiB of logits kept for the backward without it.
  EXPECT_LT(chunked + (int64_t{3} << 20), none) << "none " << none << " streambp " << chunked;
}

// Full recomputation holds one whole layer's activations in its backward; StreamBP one chunk's
// (besides the layer's keys, values and row gradients), so its peak falls with the chunk.
TEST(StreamBpMemory, PeakFallsBelowFullRecomputationAndWithTheChunk) {
  const std::string model = llama_config_model(96, 4);
  const int64_t full = train_peak_bytes(model, "--recompute full");
  const int64_t whole = train_peak_bytes(model, "--streambp 64");
  const int64_t chunked = train_peak_bytes(model, "--streambp 8");
  EXPECT_LT(chunked, whole) << "streambp 8 " << chunked << " streambp 64 " << whole;
  EXPECT_LT(chunked, full) << "streambp 8 " << chunked << " full " << full;
}

TEST(StreamBpRefusals, SequenceSplitsAndCapacityAreNamed) {
  const std::string dir = make_temp_dir("weft_streambp_bad");
  RunResult sp = run_weft(
      absl::StrCat(train_args(llama_config_model(96, 2), dir, 1), " --streambp 4 --sp 2"), 2);
  EXPECT_NE(sp.exit_code, 0);
  EXPECT_NE(sp.err.find("--streambp with --sp 2"), std::string::npos) << sp.err;
  RunResult r =
      run_weft(absl::StrCat(train_args(model_fixture("mixtral_moe"), dir, 1, token_data(64)),
                            " --streambp 4 --moe-capacity-factor 1.5"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--streambp with --moe-capacity-factor 1.5"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace weft::testing
