// runtime/train/planner.h: the parameter memory it predicts equals the models' real parameter
// counts, ZeRO-1 and the mesh divide what they should, the mesh rules refuse what weft refuses,
// and the ranking puts fitting layouts first, fastest first.
#include "runtime/train/planner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "runtime/core/byte_size.h"
#include "runtime/io/safetensors.h"
#include "tests/support/test_util.h"

namespace weft::train {
namespace {

using testing::fixtures_dir;

io::ModelConfig fixture_config(const std::string& name) {
  return io::load_model_config(fixtures_dir() + "/models/" + name).value();
}

// Elements of every tensor in the fixture's weights (one file or HF shards).
int64_t fixture_parameters(const std::string& name) {
  int64_t total = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(fixtures_dir() + "/models/" + name)) {
    const std::string file = entry.path().filename().string();
    if (!file.starts_with("model") || !file.ends_with(".safetensors")) continue;
    auto st = io::SafetensorsFile::open(entry.path().string());
    EXPECT_TRUE(st.ok()) << st.status();
    for (const std::string& tensor : (*st)->names()) total += (*st)->get_f32(tensor)->numel();
  }
  return total;
}

const MachineModel kMachine{
    .cores = 2, .flops_per_core = 1e10, .latency_s = 1e-4, .bytes_per_s = 2e9};

PlanRequest request(const std::string& model, int ranks) {
  return {.model = fixture_config(model), .ranks = ranks, .seq_len = 16, .global_batch = 8};
}

TEST(Planner, WeightsAndOptimizerBytesAreTheModelsParameters) {
  for (const std::string name : {"llama_gqa", "qwen2_tied", "mixtral_moe", "hybrid_linear"}) {
    SCOPED_TRACE(name);
    const Prediction p = predict(request(name, 1), kMachine, Layout{}).value();
    const int64_t params = fixture_parameters(name);
    EXPECT_EQ(p.weight_bytes, 2 * 4 * params);     // weights + gradients, f32
    EXPECT_EQ(p.optimizer_bytes, 2 * 4 * params);  // AdamW's two moments
  }
}

TEST(Planner, TensorParallelSplitsAndZeroShards) {
  const PlanRequest r = request("llama_gqa", 2);
  const Prediction one = predict(request("llama_gqa", 1), kMachine, Layout{}).value();
  const Prediction tp = predict(r, kMachine, Layout{.tp = 2, .dp = 1}).value();
  const Prediction dp = predict(r, kMachine, Layout{.dp = 2}).value();
  const Prediction zero = predict(r, kMachine, Layout{.dp = 2, .zero1 = true}).value();
  EXPECT_LT(tp.weight_bytes, one.weight_bytes * 0.6);  // all but the norms split
  EXPECT_GT(tp.weight_bytes, one.weight_bytes * 0.5);
  EXPECT_EQ(dp.weight_bytes, one.weight_bytes);
  EXPECT_EQ(zero.optimizer_bytes, one.optimizer_bytes / 2);
  EXPECT_LT(dp.activation_bytes, one.activation_bytes);  // half the sequences per rank
  EXPECT_GT(dp.comm_s, 0);                               // the gradient all-reduce
  EXPECT_EQ(one.comm_s, 0);
}

TEST(Planner, MemorySaversOrderAsDocumented) {
  const PlanRequest r = request("llama_gqa", 1);
  auto acts = [&](const std::string& saver) {
    return predict(r, kMachine, Layout{.recompute = saver}).value().activation_bytes;
  };
  EXPECT_LT(acts("selective"), acts("none"));
  EXPECT_LT(acts("full"), acts("selective"));
  auto time = [&](const std::string& saver) {
    return predict(r, kMachine, Layout{.recompute = saver}).value().compute_s;
  };
  EXPECT_GT(time("full"), time("none"));  // a second forward of every layer
}

TEST(Planner, MeshRulesAreWeftsRules) {
  const PlanRequest r = request("llama_gqa", 3);  // 4 heads, 2 KV heads, 2 layers
  EXPECT_FALSE(predict(r, kMachine, Layout{.tp = 3, .dp = 1}).ok());
  EXPECT_FALSE(predict(request("llama_gqa", 4), kMachine, Layout{.pp = 4}).ok());
  EXPECT_FALSE(predict(request("llama_gqa", 2), kMachine, Layout{.dp = 2, .ep = 2}).ok());
  EXPECT_FALSE(
      predict(request("llama_gqa", 2), kMachine, Layout{.sp = 2, .recompute = "streambp"}).ok());
  const absl::Status s = predict(r, kMachine, Layout{.tp = 3, .dp = 1}).status();
  EXPECT_NE(std::string(s.message()).find("does not divide num_attention_heads 4"),
            std::string::npos)
      << s;
}

TEST(Planner, FittingLayoutsComeFirstFastestFirst) {
  PlanRequest r = request("llama_gqa", 4);
  const std::vector<Prediction> all = plan(r, kMachine).value();
  ASSERT_GT(all.size(), 10u);
  int64_t smallest = all.front().peak_bytes;
  for (const Prediction& p : all) smallest = std::min(smallest, p.peak_bytes);
  r.memory_bytes = smallest + (all.front().peak_bytes - smallest) / 2;
  const std::vector<Prediction> limited = plan(r, kMachine).value();
  bool seen_unfit = false;
  for (size_t i = 0; i < limited.size(); ++i) {
    if (!limited[i].fits) seen_unfit = true;
    EXPECT_FALSE(seen_unfit && limited[i].fits) << "a fitting layout after an unfitting one";
    if (limited[i].fits) EXPECT_LE(limited[i].peak_bytes, r.memory_bytes);
    if (i > 0 && limited[i].fits) EXPECT_GE(limited[i].step_s, limited[i - 1].step_s);
  }
}

TEST(Planner, ParsesSizesAndMeshes) {
  EXPECT_EQ(parse_byte_size("800MiB").value(), 800LL << 20);
  EXPECT_EQ(parse_byte_size("80GB").value(), 80'000'000'000LL);
  EXPECT_EQ(parse_byte_size("1.5GiB").value(), 3LL << 29);
  EXPECT_EQ(parse_byte_size("4096").value(), 4096);
  EXPECT_FALSE(parse_byte_size("lots").has_value());
  EXPECT_FALSE(parse_byte_size("-1MB").has_value());
  const Layout l = parse_layout("tp=2,pp=2", 8).value();
  EXPECT_EQ(l.tp, 2);
  EXPECT_EQ(l.pp, 2);
  EXPECT_EQ(l.dp, 2);
  EXPECT_FALSE(parse_layout("tp=3", 8).ok());
  EXPECT_FALSE(parse_layout("xp=2", 8).ok());
  EXPECT_EQ(l.flags(64), "--tp 2 --pp 2 --sp 1");
  EXPECT_EQ((Layout{.micro_batch = 1, .recompute = "streambp", .zero1 = true}).flags(64),
            "--tp 1 --pp 1 --sp 1 --micro-batch 1 --streambp 8 --zero 1");
}

}  // namespace
}  // namespace weft::train
