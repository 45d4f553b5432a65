// `weft eval` end to end: one rank equals the PyTorch reference; N data-parallel ranks equal one
// rank; the dp traffic equals the all-reduce formula.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

const char* kModels[] = {"llama_gqa", "qwen2_tied", "mixtral_moe", "hybrid_linear"};

class EvalFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(EvalFixture, OneRankMatchesPyTorchReference) {
  const std::string model = model_fixture(GetParam());
  const std::string ref = model + "/reference.safetensors";
  const std::string dir = make_temp_dir("weft_eval");
  auto tokens = io::SafetensorsFile::open(ref).value()->get("tokens").value();
  const std::string out = dir + "/out.safetensors";
  RunResult r = run_weft(absl::StrCat("eval --model ", model, " --tokens ",
                                      write_token_file(dir, tokens), " --out ", out, " --grads"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TENSORS_CLOSE(load_tensor(out, "logits"), load_tensor(ref, "logits"), 1e-4);
  EXPECT_TENSORS_CLOSE(load_tensor(out, "loss"), load_tensor(ref, "loss"), 1e-5);
  auto reference = io::SafetensorsFile::open(ref).value();
  int grads = 0;
  for (const std::string& name : reference->names()) {
    if (name.rfind("grad.", 0) != 0) continue;
    SCOPED_TRACE(name);
    EXPECT_TENSORS_CLOSE(load_tensor(out, name.substr(5)), reference->get_f32(name).value(), 1e-4);
    ++grads;
  }
  EXPECT_GT(grads, 10);
}

INSTANTIATE_TEST_SUITE_P(Models, EvalFixture, ::testing::ValuesIn(kModels));

// Six sequences so that 2 and 3 ranks split them evenly and 4 ranks unevenly (2,2,1,1).
class EvalDataParallel : public ::testing::TestWithParam<const char*> {};

TEST_P(EvalDataParallel, RanksEqualOneRank) {
  const std::string model = model_fixture(GetParam());
  const std::string dir = make_temp_dir("weft_eval_dp");
  const auto vocab = load_tensor(model + "/reference.safetensors", "logits").dim(2);
  const std::string tokens = write_token_file(dir, random_ids({6, 10}, 17, vocab));
  auto eval = [&](int ranks) {
    const std::string out = absl::StrCat(dir, "/out", ranks, ".safetensors");
    RunResult r = run_weft(
        absl::StrCat("eval --model ", model, " --tokens ", tokens, " --out ", out, " --grads"),
        ranks);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  };
  const std::string one = eval(1);
  auto names = io::SafetensorsFile::open(one).value()->names();
  for (int ranks : {2, 3, 4}) {
    SCOPED_TRACE(absl::StrCat(ranks, " ranks"));
    const std::string many = eval(ranks);
    for (const std::string& name : names) {
      SCOPED_TRACE(name);
      EXPECT_TENSORS_CLOSE(load_tensor(many, name), load_tensor(one, name), 1e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EvalDataParallel,
                         ::testing::Values("llama_gqa", "mixtral_moe", "hybrid_linear"));

TEST(EvalCommReport, DataParallelBytesEqualTheAllReduceFormula) {
  const std::string model = model_fixture("llama_gqa");
  const std::string dir = make_temp_dir("weft_eval_report");
  const std::string tokens = write_token_file(dir, random_ids({6, 10}, 3, 96));
  // Gradient bytes: every parameter once (f32), as in the one-rank output.
  const std::string one = dir + "/one.safetensors";
  ASSERT_EQ(run_weft(absl::StrCat("eval --model ", model, " --tokens ", tokens, " --out ", one,
                                  " --grads"))
                .exit_code,
            0);
  auto file = io::SafetensorsFile::open(one).value();
  int64_t grad_bytes = 0;
  for (const std::string& name : file->names()) {
    if (name != "logits" && name != "loss") grad_bytes += file->get_f32(name).value().nbytes();
  }
  for (int p : {2, 3}) {
    const std::string report = absl::StrCat(dir, "/report", p, ".json");
    RunResult r = run_weft(absl::StrCat("eval --model ", model, " --tokens ", tokens, " --out ",
                                        dir, "/many.safetensors --grads --comm-report ", report),
                           p);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(read_text(report));
    ASSERT_EQ(j["ranks"].size(), static_cast<size_t>(p));
    for (const auto& rank : j["ranks"]) {
      // Replicated weights' gradients and the loss are summed over every replica: the dp x sp
      // group (here sp = 1, so the dp ranks).
      const auto& dp = rank["groups"]["dp_sp"];
      // One bucket holding every gradient, then the 4-byte loss: all-reduce sends 2(P-1)/P.
      EXPECT_EQ(dp["calls"].get<int64_t>(), 2);
      EXPECT_EQ(dp["bytes_sent"].get<int64_t>(),
                2 * (p - 1) * grad_bytes / p + 2 * (p - 1) * 4 / p);
    }
  }
}

}  // namespace
}  // namespace weft::testing
