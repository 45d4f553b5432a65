// Expert parallelism from the command line (docs/algorithms.md "Expert parallelism"): `weft eval`
// (logits, loss, every gradient) and `weft train` with the experts dispatched over ep, split
// over etp, folded under tp attention, with pp, dp, ZeRO-1 and capacity dropping equal one rank;
// a checkpoint saved at one expert layout resumes at another; bad expert meshes are refused.
#include <gtest/gtest.h>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

// The PyTorch-checked Mixtral fixture: 4 experts, top 2, hidden 32, experts' F 48, 2 layers.
std::string eval_tokens(const std::string& dir) {
  return write_token_file(dir, random_ids({8, 12}, 5, 64));
}

TEST(MoeEval, ExpertParallelMeshesEqualOneRank) {
  const std::string model = model_fixture("mixtral_moe");
  const std::string dir = make_temp_dir("weft_moe_eval");
  const std::string tokens = eval_tokens(dir);
  auto eval = [&](const Mesh& m) { return eval_on_mesh(model, tokens, dir, m); };
  const std::string one = eval({1, ""});
  for (const Mesh& m : std::vector<Mesh>{{2, "--ep 2"},
                                         {2, "--etp 2"},
                                         {2, "--tp 2 --ep 2"},
                                         {2, "--tp 2 --ep 2 --sequence-parallel"},
                                         {4, "--ep 4"},
                                         {4, "--ep 2 --etp 2"},
                                         {4, "--ep 2"},
                                         {4, "--tp 2 --ep 2"},
                                         {4, "--tp 2 --ep 4 --sequence-parallel"},
                                         {4, "--pp 2 --ep 2 --micro-batch 2"},
                                         {4, "--tp 2 --pp 2 --ep 2 --micro-batch 4"}}) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    expect_same_tensors(eval(m), one, 1e-5);
  }
}

TEST(MoeEval, CapacityDroppingEqualsOneRankAndDrops) {
  const std::string model = model_fixture("mixtral_moe");
  const std::string dir = make_temp_dir("weft_moe_capacity");
  const std::string tokens = eval_tokens(dir);
  auto eval = [&](const Mesh& m) { return eval_on_mesh(model, tokens, dir, m); };
  const std::string capacity = "--moe-capacity-factor 0.5";
  const std::string one = eval({1, capacity});
  const float dropless = load_tensor(eval({1, ""}), "loss").item();
  EXPECT_GT(std::abs(load_tensor(one, "loss").item() - dropless), 1e-4)
      << "a capacity of half the even share must drop choices and change the loss";
  for (const Mesh& m : std::vector<Mesh>{{2, "--tp 2 " + capacity},
                                         {2, "--ep 2 " + capacity},
                                         {4, "--ep 2 --etp 2 " + capacity},
                                         {4, "--tp 2 --ep 2 " + capacity}}) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    expect_same_tensors(eval(m), one, 1e-5);
  }
}

TEST(MoeEval, LoadBalancingLossEqualsOneRankAndReachesTheRouters) {
  const std::string model = model_fixture("mixtral_moe");
  const std::string dir = make_temp_dir("weft_moe_aux");
  const std::string tokens = eval_tokens(dir);
  auto eval = [&](const Mesh& m) { return eval_on_mesh(model, tokens, dir, m); };
  const std::string aux = "--moe-aux-loss-coef 0.5";
  const std::string one = eval({1, aux});
  const float value = load_tensor(one, "moe_aux_loss").item();
  EXPECT_GE(value, 2.0f) << "E sum f P is at least k = 2 (equality: perfectly balanced)";
  const std::string gate = "model.layers.0.block_sparse_moe.gate.weight";
  const Tensor without = load_tensor(eval({1, ""}), gate);
  EXPECT_FALSE(::weft::testing::tensors_close(load_tensor(one, gate), without, 1e-3))
      << "the loss must change the routers' gradients";
  EXPECT_TENSORS_CLOSE(load_tensor(one, "loss"), load_tensor(eval({1, ""}), "loss"), 0.0)
      << "reported apart: `loss` stays the language-model loss";
  for (const Mesh& m : std::vector<Mesh>{{2, "--ep 2 " + aux},
                                         {2, "--tp 2 " + aux},
                                         {4, "--tp 2 --ep 2 --sequence-parallel " + aux},
                                         {4, "--pp 2 --tp 2 --ep 2 " + aux},
                                         {2, "--micro-batch 4 " + aux}}) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    expect_same_tensors(eval(m), one, 1e-5);
  }
}

// A Mixtral layout sized for the training token file (vocabulary 96), config only.
std::string moe_model() {
  const std::string dir = make_temp_dir("weft_moe_model");
  std::ofstream(dir + "/config.json") << R"({"architectures": ["MixtralForCausalLM"],
    "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64, "tie_word_embeddings": false, "num_local_experts": 4,
    "num_experts_per_tok": 2})";
  return dir;
}

const std::string kClip = " --clip-grad 1.0";

// train_args with gradient clipping on (the norm counts each expert once, over ep and edp).
std::string moe_train_args(const std::string& model, const std::string& dir, int steps) {
  return train_args(model, dir, steps) + kClip;
}

TEST(MoeTrain, ExpertParallelTrainingEqualsOneRank) {
  expect_meshes_train_alike(moe_model(),
                            {{2, "--ep 2"},
                             {4, "--ep 2 --etp 2"},
                             {4, "--tp 2 --ep 2"},
                             {4, "--ep 2 --zero 1"},
                             {4, "--ep 4 --zero 1 --micro-batch 1"},
                             {4, "--pp 2 --ep 2 --micro-batch 1"}},
                            4, kClip);
}

TEST(MoeTrain, LoadBalancingLossTrainingEqualsOneRank) {
  // The statistics are per global micro-batch (the m-th of every dp rank): one per step here, as
  // on one rank.
  expect_meshes_train_alike(moe_model(), {{2, "--ep 2"}, {4, "--tp 2 --ep 2"}}, 4,
                            kClip + " --moe-aux-loss-coef 0.01");
}

TEST(MoeTrain, CapacityDroppingTrainingEqualsOneRank) {
  const std::string model = moe_model();
  const std::string capacity = " --moe-capacity-factor 0.75";
  const std::string one = make_temp_dir("weft_moe_cap_one");
  ASSERT_EQ(run_weft(moe_train_args(model, one, 4) + capacity).exit_code, 0);
  const std::string dir = make_temp_dir("weft_moe_cap");
  RunResult r = run_weft(moe_train_args(model, dir, 4) + capacity + " --ep 2 --etp 2", 4);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_run(dir, one);
  // Every step reports the share of dropped choices, the same on both meshes.
  auto drop_rates = [](const std::string& run) {
    std::vector<double> rates;
    std::istringstream lines(read_text(run + "/metrics.jsonl"));
    for (std::string line; std::getline(lines, line);) {
      rates.push_back(nlohmann::json::parse(line).value("moe_drop_rate", -1.0));
    }
    return rates;
  };
  const std::vector<double> rates = drop_rates(one);
  ASSERT_EQ(rates.size(), 4u);
  for (double rate : rates) {
    EXPECT_GT(rate, 0.0);
    EXPECT_LT(rate, 1.0);
  }
  EXPECT_EQ(drop_rates(dir), rates);
}

TEST(MoeTrain, ResumesAcrossExpertLayouts) {
  const std::string model = moe_model();
  const std::string straight = make_temp_dir("weft_moe_straight");
  ASSERT_EQ(run_weft(moe_train_args(model, straight, 4)).exit_code, 0);
  // Steps 1-2 saved at one expert layout, steps 3-4 loaded at another.
  for (const auto& [first, then] :
       std::vector<std::pair<Mesh, Mesh>>{{{4, "--ep 4"}, {2, "--ep 2"}},
                                          {{4, "--ep 4 --zero 1"}, {4, "--ep 2 --etp 2"}},
                                          {{4, "--ep 2 --etp 2"}, {1, ""}}}) {
    SCOPED_TRACE(absl::StrCat(first.flags, " -> ", then.flags));
    const std::string dir = make_temp_dir("weft_moe_resume");
    RunResult a =
        run_weft(absl::StrCat(moe_train_args(model, dir, 2), " ", first.flags), first.ranks);
    ASSERT_EQ(a.exit_code, 0) << a.err;
    RunResult b =
        run_weft(absl::StrCat(moe_train_args(model, dir, 4), " --load ", dir, "/ckpt ", then.flags),
                 then.ranks);
    ASSERT_EQ(b.exit_code, 0) << b.err;
    expect_same_run(dir, straight);
  }
}

TEST(MoeTrain, OfflineReshardToAnotherExpertLayoutThenLoad) {
  const std::string model = moe_model();
  const std::string straight = make_temp_dir("weft_moe_straight");
  ASSERT_EQ(run_weft(moe_train_args(model, straight, 4)).exit_code, 0);
  const std::string dir = make_temp_dir("weft_moe_offline");
  RunResult a = run_weft(moe_train_args(model, dir, 2) + " --ep 4 --zero 1", 4);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  RunResult r = run_weft(absl::StrCat("ckpt reshard --from ", dir, "/ckpt --to ", dir,
                                      "/resharded --to-mesh dp=4,ep=2,etp=2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(run_weft(absl::StrCat("ckpt verify --from ", dir, "/resharded")).exit_code, 0);
  RunResult b = run_weft(
      absl::StrCat(moe_train_args(model, dir, 4), " --load ", dir, "/resharded --ep 2 --etp 2"), 4);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  expect_same_run(dir, straight);
}

// The ep group's all-to-all bytes, summed over the ranks of a --comm-report.
int64_t ep_bytes(const std::string& report) {
  const auto json = nlohmann::json::parse(read_text(report));
  int64_t bytes = 0;
  for (const auto& rank : json["ranks"]) bytes += rank["groups"]["ep"]["bytes_sent"].get<int64_t>();
  return bytes;
}

TEST(SpeculativeMoe, ProfiledPlacementGivesTheSameResultWithFewerBytes) {
  const std::string model = model_fixture("mixtral_moe");
  const std::string dir = make_temp_dir("weft_moe_spec");
  const std::string tokens = eval_tokens(dir);
  const std::string placement = dir + "/placement.json";
  RunResult profiled = run_weft(absl::StrCat("moe profile --model ", model, " --tokens ", tokens,
                                             " --ep 2 --out ", placement));
  ASSERT_EQ(profiled.exit_code, 0) << profiled.err;
  const auto written = nlohmann::json::parse(read_text(placement));
  ASSERT_EQ(written["layers"].size(), 2u);
  for (const auto& layer : written["layers"]) {
    EXPECT_GE(layer["co_located"].get<double>(), layer["co_located_contiguous"].get<double>())
        << "the co-clustering must keep at least as many co-chosen pairs together";
  }
  auto eval = [&](const Mesh& m) { return eval_on_mesh(model, tokens, dir, m); };
  const std::string one = eval({1, ""});
  for (const std::string& mesh : {"--tp 2 --ep 2", "--ep 2"}) {
    SCOPED_TRACE(mesh);
    const std::string plain_report = dir + "/plain.json", spec_report = dir + "/spec.json";
    const std::string plain = eval({2, mesh + " --comm-report " + plain_report});
    const std::string spec =
        eval({2, mesh + " --speculative-moe " + placement + " --comm-report " + spec_report});
    expect_same_tensors(spec, one, 1e-5);
    expect_same_tensors(plain, one, 1e-5);
    EXPECT_LT(ep_bytes(spec_report), ep_bytes(plain_report));
  }
  // Training with the placement (the same expert count and layers) equals one rank too.
  const std::string train_model = moe_model();
  const std::string straight = make_temp_dir("weft_moe_spec_one");
  ASSERT_EQ(run_weft(moe_train_args(train_model, straight, 4)).exit_code, 0);
  const std::string trained = make_temp_dir("weft_moe_spec_train");
  RunResult r = run_weft(absl::StrCat(moe_train_args(train_model, trained, 4),
                                      " --tp 2 --ep 2 --speculative-moe ", placement),
                         2);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_run(trained, straight);
  // A placement made for another --ep is refused, naming both.
  RunResult wrong = run_weft(absl::StrCat(moe_train_args(train_model, trained, 3),
                                          " --ep 4 --speculative-moe ", placement),
                             4);
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("written for --ep 2, this run has --ep 4"), std::string::npos)
      << wrong.err;
}

TEST(MoeRefusals, BadExpertMeshesAreRefusedNamingTheFlag) {
  const std::string dir = make_temp_dir("weft_moe_bad");
  const std::string tokens = eval_tokens(dir);
  const std::string moe = model_fixture("mixtral_moe");
  const std::string llama = model_fixture("llama_gqa");
  for (const auto& [ranks, model, flags, needle] :
       std::vector<std::tuple<int, std::string, std::string, std::string>>{
           {3, moe, "--ep 3", "--ep 3 does not divide num_local_experts 4"},
           {2, llama, "--ep 2", "--ep 2 --etp 1: the model has no MoE layers"},
           {4, moe, "--ep 4 --etp 2", "does not divide"},
           {2, moe, "--sp 2 --moe-capacity-factor 1",
            "--moe-capacity-factor applies per whole sequence: it cannot run with --sp 2"},
           {1, moe, "--moe-capacity-factor -1", "--moe-capacity-factor -1 must be"}}) {
    SCOPED_TRACE(flags);
    RunResult r = run_weft(absl::StrCat("eval --model ", model, " --tokens ", tokens, " --out ",
                                        dir, "/out.safetensors ", flags),
                           ranks, 120);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace weft::testing
