// SeCO and SpaCO from the command line (docs/algorithms.md "SeCO and SpaCO"): --seco CHUNK runs
// the whole model forward and backward chunk by chunk of positions. Exact: eval with --grads and
// 4-step training equal the runs without it, for chunk sizes that divide T, that do not, of one
// position and of more than T; dense, MoE and hybrid linear-attention models; on one rank and
// with tp, dp + ZeRO-1 and expert parallelism. --spaco-keep is seeded (same seed, same run) and
// not exact (its unbiasedness: tests/unit/spaco_test.cc). The accounted peak memory falls below
// full recomputation's; the meshes and options it cannot serve are refused by name.
#include <gtest/gtest.h>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

TEST(SecoEval, ChunkWiseRunGivesTheSameLogitsLossAndGradients) {
  for (const auto& [fixture, meshes] : std::vector<std::pair<std::string, std::vector<Mesh>>>{
           {"llama_gqa", {{1, ""}, {2, "--tp 2"}}},
           {"mixtral_moe", {{1, ""}, {2, "--ep 2"}, {2, "--tp 2 --ep 2"}}},
           {"hybrid_linear", {{1, ""}, {2, "--tp 2"}}}}) {
    SCOPED_TRACE(fixture);
    const std::string model = model_fixture(fixture);
    const std::string dir = make_temp_dir("weft_seco_eval");
    const int64_t vocab = load_tensor(model + "/reference.safetensors", "logits").dim(2);
    const std::string tokens = write_token_file(dir, random_ids({3, 12}, 13, vocab));
    for (const Mesh& m : meshes) {
      SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
      const std::string plain = eval_on_mesh(model, tokens, dir, m);
      for (int chunk : {1, 4, 5, 64}) {
        SCOPED_TRACE(chunk);
        const std::string again =
            eval_on_mesh(model, tokens, dir, {m.ranks, absl::StrCat(m.flags, " --seco ", chunk)});
        expect_same_tensors(again, plain, 1e-5);
      }
    }
  }
}

// 8 sequences of 12 within `vocab`.
std::string token_data(int64_t vocab) {
  const std::string dir = make_temp_dir("weft_seco_data");
  return write_token_file(dir, random_ids({8, 12}, 5, vocab));
}

TEST(SecoTrain, TrainsAsWithout) {
  for (const auto& [model, vocab, meshes] :
       std::vector<std::tuple<std::string, int64_t, std::vector<Mesh>>>{
           {llama_config_model(96, 4),
            96,
            {{1, "--seco 5"},
             {2, "--seco 4 --tp 2"},
             {2, "--seco 5 --zero 1 --micro-batch 1"},
             {1, "--seco 3 --recompute full"}}},
           {model_fixture("mixtral_moe"), 64, {{1, "--seco 5"}, {2, "--seco 4 --ep 2"}}},
           {model_fixture("hybrid_linear"), 72, {{1, "--seco 5"}, {2, "--seco 3 --tp 2"}}}}) {
    SCOPED_TRACE(model);
    const std::string data = token_data(vocab);
    const std::string one = make_temp_dir("weft_seco_one");
    RunResult base = run_weft(train_args(model, one, 4, data));
    ASSERT_EQ(base.exit_code, 0) << base.err;
    for (const Mesh& m : meshes) {
      SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
      const std::string dir = make_temp_dir("weft_seco_mesh");
      RunResult r = run_weft(absl::StrCat(train_args(model, dir, 4, data), " ", m.flags), m.ranks);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      expect_same_run(dir, one);
    }
  }
}

TEST(SpacoEval, DrawsFollowTheSeedAndAreNotExact) {
  const std::string model = model_fixture("llama_gqa");
  const std::string dir = make_temp_dir("weft_spaco_eval");
  const std::string tokens = write_token_file(dir, random_ids({3, 12}, 13, 96));
  const std::string exact = eval_on_mesh(model, tokens, dir, {1, "--seco 3"});
  const std::string a = eval_on_mesh(model, tokens, dir, {1, "--seco 3 --spaco-keep 2 --seed 1"});
  const std::string again =
      eval_on_mesh(model, tokens, dir, {1, " --seco 3 --spaco-keep 2 --seed 1"});  // own file
  expect_same_tensors(again, a, 0);                                                // the same draw
  // The loss is the whole sequence's; the gradients are an estimate.
  EXPECT_EQ(load_tensor(a, "loss").to_floats(), load_tensor(exact, "loss").to_floats());
  const std::vector<float> estimate =
      load_tensor(a, "model.layers.0.self_attn.q_proj.weight").to_floats();
  EXPECT_NE(estimate, load_tensor(exact, "model.layers.0.self_attn.q_proj.weight").to_floats());
}

TEST(SecoMemory, PeakFallsBelowFullRecomputation) {
  const std::string model = llama_config_model(96, 4);
  const int64_t full = train_peak_bytes(model, "--recompute full");
  const int64_t seco = train_peak_bytes(model, "--seco 8");
  EXPECT_LT(seco, full) << "seco 8 " << seco << " full " << full;
}

TEST(SecoRefusals, WhatItCannotServeIsNamed) {
  const std::string dir = make_temp_dir("weft_seco_bad");
  const std::string dense = train_args(llama_config_model(96, 2), dir, 1);
  const std::string moe = train_args(model_fixture("mixtral_moe"), dir, 1, token_data(64));
  for (const auto& [ranks, args, message] : std::vector<std::tuple<int, std::string, std::string>>{
           {2, dense + " --seco 4 --sp 2", "--seco with --sp 2"},
           {2, dense + " --seco 4 --tp 2 --sequence-parallel", "--seco with --sequence-parallel"},
           {2, dense + " --seco 4 --pp 2", "--seco with --pp 2"},
           {1, dense + " --seco 4 --streambp 4", "--seco with --streambp: choose one"},
           {1, dense + " --spaco-keep 2", "--spaco-keep needs --seco CHUNK"},
           {1, moe + " --seco 4 --moe-aux-loss-coef 0.01", "--seco with --moe-aux-loss-coef"},
           {1, moe + " --seco 4 --moe-capacity-factor 2", "--seco with --moe-capacity-factor 2"}}) {
    SCOPED_TRACE(args);
    RunResult r = run_weft(args, ranks);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace weft::testing
