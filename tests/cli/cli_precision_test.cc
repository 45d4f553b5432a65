// --precision bf16 (kernels/ops.h set_bf16_compute; docs/architecture.md "Precision") against
// f32. bf16 keeps 8 significant bits: one rounding moves a value by at most 2^-9 (0.2%)
// relative. The tiny Llama's loss passes through a few hundred roundings per token, whose errors
// mostly cancel in the sums; the loss is the mean over tokens. So the stated tolerance for the
// loss is 1e-2 relative (measured: about 3e-4), and for a gradient tensor 5e-2 of its L2 norm
// (gradients go through twice the roundings). The same bf16 run on other meshes rounds partial
// sums at other points, so meshes agree within the same 1e-2, not to f32's 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

struct Scratch {
  std::string dir = make_temp_dir("weft_precision");
  std::string tokens = write_token_file(dir, random_ids({16, 16}, 9, 96));
};

std::vector<double> train_losses(const Scratch& run, const std::string& name, const std::string& extra,
                                 int ranks = 1) {
  const std::string metrics = absl::StrCat(run.dir, "/", name, ".jsonl");
  const RunResult r =
      run_weft(absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", run.tokens,
                            " --steps 4 --global-batch 4 --seq-len 16 "
                            "--lr 1e-3 --metrics ",
                            metrics, " ", extra),
               ranks);
  EXPECT_EQ(r.exit_code, 0) << extra << ": " << r.err;
  return metric_losses(metrics);
}

double rel_l2(const Tensor& a, const Tensor& b) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<float>()[i], y = b.data<float>()[i];
    diff += (x - y) * (x - y);
    norm += y * y;
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

TEST(Precision, Bf16TrainsCloseToF32AndIsDeterministic) {
  Scratch run;
  const std::vector<double> f32 = train_losses(run, "f32", "");
  const std::vector<double> bf16 = train_losses(run, "bf16", "--precision bf16");
  const std::vector<double> again = train_losses(run, "bf16_again", "--precision bf16");
  ASSERT_EQ(f32.size(), 4u);
  ASSERT_EQ(bf16.size(), 4u);
  int differ = 0;
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_NEAR(bf16[i], f32[i], 1e-2 * f32[i]) << "step " << i + 1;
    EXPECT_EQ(again[i], bf16[i]) << "step " << i + 1 << ": bf16 is deterministic";
    differ += bf16[i] != f32[i] ? 1 : 0;
  }
  EXPECT_GT(differ, 0) << "bf16 changed nothing: the mode is not on";
}

TEST(Precision, Bf16GradientsAreCloseToF32) {
  Scratch run;
  const std::string tokens = model_fixture("llama_gqa") + "/tokens.txt";
  const std::string f32 = eval_on_mesh(model_fixture("llama_gqa"), tokens, run.dir, Mesh{1, ""});
  const std::string bf16 =
      eval_on_mesh(model_fixture("llama_gqa"), tokens, run.dir, Mesh{1, "--precision bf16"});
  auto want = io::SafetensorsFile::open(f32).value();
  auto got = io::SafetensorsFile::open(bf16).value();
  int changed = 0;
  for (const std::string& name : want->names()) {
    const Tensor a = got->get_f32(name).value(), b = want->get_f32(name).value();
    const double err = rel_l2(a, b);
    EXPECT_LT(err, 5e-2) << name;
    changed += err > 0 ? 1 : 0;
  }
  EXPECT_GT(changed, 0);
}

TEST(Precision, Bf16MeshesAgreeWithOneRank) {
  Scratch run;
  const std::vector<double> one = train_losses(run, "one", "--precision bf16");
  for (const Mesh& mesh : {Mesh{2, "--tp 2"}, Mesh{2, ""}}) {
    const std::vector<double> got = train_losses(run, absl::StrCat("mesh", mesh.flags.size()),
                                                 "--precision bf16 " + mesh.flags, mesh.ranks);
    ASSERT_EQ(got.size(), one.size());
    for (size_t i = 0; i < one.size(); ++i) {
      EXPECT_NEAR(got[i], one[i], 1e-2 * one[i]) << mesh.flags << " step " << i + 1;
    }
  }
}

TEST(Precision, UnknownPrecisionIsRefused) {
  Scratch run;
  const RunResult r = run_weft(absl::StrCat("eval --model ", model_fixture("llama_gqa"),
                                            " --tokens x --out y --precision fp8"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--precision 'fp8': expected f32 or bf16"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace weft::testing
