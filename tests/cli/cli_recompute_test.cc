// Activation recomputation (docs/algorithms.md "Activation recomputation"): --recompute full keeps
// each decoder layer's input only and runs its forward again in the backward; selective reruns
// the softmax-attention core. Exact: eval with --grads and training give the run without it, on
// one rank and composed with tp (and Megatron-SP), sp, pp, dp, ZeRO-1 and expert parallelism;
// the accounted peak memory falls.
#include <gtest/gtest.h>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

TEST(RecomputeEval, RecomputationGivesTheSameLogitsLossAndGradients) {
  for (const auto& [fixture, meshes] : std::vector<std::pair<std::string, std::vector<Mesh>>>{
           {"llama_gqa",
            {{1, ""}, {2, "--tp 2 --sequence-parallel"}, {2, "--sp 2"}, {2, "--pp 2"}}},
           {"mixtral_moe", {{1, ""}, {2, "--ep 2"}, {2, "--tp 2 --ep 2"}}},
           {"hybrid_linear", {{1, ""}, {2, "--sp 2"}}}}) {
    SCOPED_TRACE(fixture);
    const std::string model = model_fixture(fixture);
    const std::string dir = make_temp_dir("weft_recompute_eval");
    const int64_t vocab = load_tensor(model + "/reference.safetensors", "logits").dim(2);
    const std::string tokens = write_token_file(dir, random_ids({4, 12}, 5, vocab));
    for (const Mesh& m : meshes) {
      SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
      const std::string plain = eval_on_mesh(model, tokens, dir, m);
      // StreamBP needs whole sequences per rank (the refusals are tested below).
      const bool whole = m.flags.find("--sp ") == std::string::npos;
      // 5 rows per head chunk: not a divisor of the 48 (or 24 per rank) rows.
      for (const char* saver : {"--recompute full", "--recompute selective", "--streambp 5",
                                "--streambp 5 --recompute full"}) {
        SCOPED_TRACE(saver);
        if (!whole && std::string(saver).find("streambp") != std::string::npos) continue;
        const std::string again =
            eval_on_mesh(model, tokens, dir, {m.ranks, m.flags + " " + saver});
        // Recomputation repeats the same kernels on the same rows; StreamBP's chunks sum the
        // attention and the weight gradients in another order (the bound: 1e-5).
        const bool chunked = std::string(saver).find("streambp") != std::string::npos;
        expect_same_tensors(again, plain, chunked ? 1e-5 : 1e-6);
      }
    }
  }
}

// A 4-layer Llama (config only), whose activations outweigh its weights at T = 64.
std::string four_layer_model() { return llama_config_model(96, 4); }

TEST(RecomputeTrain, RecomputationTrainsAsWithout) {
  expect_meshes_train_alike(four_layer_model(),
                            {{1, "--recompute full"},
                             {1, "--recompute selective"},
                             {2, "--recompute selective --tp 2 --sequence-parallel"},
                             {2, "--recompute full --tp 2"},
                             {2, "--recompute full --zero 1 --micro-batch 1"},
                             {2, "--recompute full --pp 2 --micro-batch 1"}},
                            4);
}

TEST(RecomputeTrain, RecomputationLowersThePeakMemory) {
  const std::string model = four_layer_model();
  const int64_t none = train_peak_bytes(model, "");
  const int64_t selective = train_peak_bytes(model, "--recompute selective");
  const int64_t full = train_peak_bytes(model, "--recompute full");
  // Selective drops each layer's attention output and log-sum-exp (N*D + B*H*T floats).
  EXPECT_LT(selective, none);
  EXPECT_LT(full, selective);
  // Without recomputation all 4 layers' activations are alive at the start of the backward;
  // with it, the 4 inputs and one layer's activations at a time.
  EXPECT_LT(full, none);
  EXPECT_LT(static_cast<double>(full), 0.75 * static_cast<double>(none))
      << "none " << none << " full " << full;
}

TEST(RecomputeRefusals, UnknownModeIsNamed) {
  const std::string dir = make_temp_dir("weft_recompute_bad");
  RunResult r = run_weft(train_args(four_layer_model(), dir, 1) + " --recompute sometimes");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--recompute 'sometimes': choose none, selective or full"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace weft::testing
