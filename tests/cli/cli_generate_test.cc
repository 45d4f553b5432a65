// `weft generate`: greedy decoding with the KV cache equals the reference's full re-forward
// decoding; sampling is reproducible from its seed and reduces to greedy in the limits.
#include <gtest/gtest.h>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

std::string last_line(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  return lines.empty() ? "" : lines.back();
}

class Generate : public ::testing::TestWithParam<const char*> {};

TEST_P(Generate, GreedyMatchesReference) {
  const std::string model = model_fixture(GetParam());
  auto ref = io::SafetensorsFile::open(model + "/reference.safetensors").value();
  const std::vector<int64_t> prompt = ref->get("generate.prompt").value().to_ints();
  const std::vector<int64_t> want = ref->get("generate.greedy").value().to_ints();
  RunResult r = run_weft(absl::StrCat("generate --model ", model, " --prompt-ids ",
                                      absl::StrJoin(prompt, ","), " --max-new-tokens ", want.size(),
                                      " --greedy"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(last_line(r.out), absl::StrJoin(want, ","));
}

INSTANTIATE_TEST_SUITE_P(Models, Generate,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear"));

TEST(GenerateSampling, SeededSamplingIsReproducibleAndNarrowNucleusIsGreedy) {
  const std::string model = model_fixture("llama_gqa");
  auto run = [&](const std::string& flags) {
    RunResult r = run_weft(absl::StrCat("generate --model ", model,
                                        " --prompt-ids 1,2,3 --max-new-tokens 12 ", flags));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return last_line(r.out);
  };
  const std::string a = run("--seed 5 --temperature 1.5");
  EXPECT_EQ(a, run("--seed 5 --temperature 1.5"));
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(a, ',')).size(), 12u);
  const std::string greedy = run("--greedy");
  // top-p so small that only the most likely token survives: sampling becomes argmax.
  EXPECT_EQ(run("--seed 9 --top-p 1e-6"), greedy);
  EXPECT_EQ(run("--seed 9 --temperature 1e-4"), greedy);
}

TEST(GenerateSampling, TensorParallelEqualsOneRankUnderMpirun) {
  const std::string model = model_fixture("mixtral_moe");
  const std::string args =
      absl::StrCat("generate --model ", model, " --prompt-ids 4,5 --max-new-tokens 6 --seed 3");
  RunResult one = run_weft(args);
  RunResult two = run_weft(args + " --tp 2", 2);
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(last_line(one.out), last_line(two.out));
  // Rank 0 alone prints.
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(two.out, '\n', absl::SkipEmpty())).size(), 1u);
}

}  // namespace
}  // namespace weft::testing
