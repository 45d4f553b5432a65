// `--device cuda` end to end on a real GPU (label gpu; skipped without one): each command on
// CUDA against the same command on the CPU.
//
// Tolerances, and why:
// - f32 (the default): the CUDA GEMMs use CUBLAS_COMPUTE_32F without TF32 and the other kernels
//   accumulate in f32, so the two paths differ only in summation order: about 1e-6 relative per
//   reduction of the tiny model's widths (64-192), a few 1e-6 after its layers. 1e-4 relative on
//   losses, logits and gradients leaves room for the backward's longer chains; training over 4
//   steps compounds it through AdamW (eps 1e-3 keeps its division tame), still well under 1e-3.
// - bf16 (--precision bf16): the same rounding points on both paths, so the difference is f32
//   summation order seen through bf16's 2^-9 steps: a value near a rounding boundary may round
//   the other way. The CPU tests bound bf16 against f32 at 1e-2 on the loss; CUDA against the
//   CPU emulation gets the same 1e-2.
// - Greedy tokens must be equal in f32 (a near-tie between two logits within 1e-4 would flip
//   one; the fixture's prompts have none on the CPU path).
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/core/device.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

#define WEFT_SKIP_WITHOUT_GPU()                                          \
  do {                                                                   \
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device here"; \
  } while (0)

std::string train_run(const std::string& device, const std::string& extra, int ranks = 1) {
  const std::string dir = make_temp_dir("weft_gpu_train");
  RunResult r = run_weft(
      absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", train_tokens(),
                   " --global-batch 4 --seq-len 12 --lr 1e-3 --eps 1e-3 --steps 4 --save ", dir,
                   "/ckpt --save-every 2 --metrics ", dir, "/metrics.jsonl --device ", device, " ",
                   extra),
      ranks);
  EXPECT_EQ(r.exit_code, 0) << extra << ": " << r.err;
  return dir;
}

void expect_losses_close(const std::string& gpu, const std::string& cpu, double tol) {
  const std::vector<double> g = metric_losses(gpu + "/metrics.jsonl");
  const std::vector<double> c = metric_losses(cpu + "/metrics.jsonl");
  ASSERT_EQ(g.size(), c.size());
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], c[i], tol * c[i]) << "step " << i + 1;
}

TEST(CliDeviceGpu, TrainOnCudaEqualsTheCpu) {
  WEFT_SKIP_WITHOUT_GPU();
  const std::string cpu = train_run("cpu", ""), gpu = train_run("cuda", "");
  expect_losses_close(gpu, cpu, 1e-4);
  expect_same_tensors(export_weights(gpu), export_weights(cpu), 1e-3);
  // The checkpoint went through pinned host buffers: it verifies and resumes.
  RunResult verify = run_weft(absl::StrCat("ckpt verify --from ", gpu, "/ckpt"));
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
}

TEST(CliDeviceGpu, Bf16TrainOnCudaIsCloseToTheCpuEmulation) {
  WEFT_SKIP_WITHOUT_GPU();
  const std::string cpu = train_run("cpu", "--precision bf16");
  const std::string gpu = train_run("cuda", "--precision bf16");
  expect_losses_close(gpu, cpu, 1e-2);
}

TEST(CliDeviceGpu, EvalOnCudaEqualsTheCpu) {
  WEFT_SKIP_WITHOUT_GPU();
  const std::string dir = make_temp_dir("weft_gpu_eval");
  for (const std::string device : {"cpu", "cuda"}) {
    RunResult r = run_weft(absl::StrCat("eval --model ", model_fixture("llama_gqa"), " --tokens ",
                                        train_tokens(), " --out ", dir, "/", device,
                                        ".safetensors --grads --device ", device));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  expect_same_tensors(dir + "/cuda.safetensors", dir + "/cpu.safetensors", 1e-4);
}

TEST(CliDeviceGpu, GenerateOnCudaEqualsTheCpu) {
  WEFT_SKIP_WITHOUT_GPU();
  for (const std::string model : {"llama_gqa", "qwen2_tied", "mixtral_moe"}) {
    const std::string gen = absl::StrCat("generate --model ", model_fixture(model),
                                         " --prompt-ids 1,2,3 --max-new-tokens 12 --device ");
    RunResult cpu = run_weft(gen + "cpu"), gpu = run_weft(gen + "cuda");
    ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
    EXPECT_EQ(gpu.out, cpu.out) << model;
  }
}

// NCCL needs a GPU per rank: tensor parallelism over two of them.
TEST(CliDeviceGpu, TensorParallelOverNcclEqualsTheCpu) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "fewer than 2 GPUs";
  const std::string cpu = train_run("cpu", "--tp 2", 2), gpu = train_run("cuda", "--tp 2", 2);
  expect_losses_close(gpu, cpu, 1e-4);
  const std::string gen = absl::StrCat("generate --model ", model_fixture("llama_gqa"),
                                       " --prompt-ids 1,2,3 --max-new-tokens 12 --tp 2 --device ");
  EXPECT_EQ(run_weft(gen + "cuda", 2).out, run_weft(gen + "cpu", 2).out);
}

}  // namespace
}  // namespace weft::testing
