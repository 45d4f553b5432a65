// --device (runtime/core/device_select.h; docs/operations.md "GPUs") without a GPU: every command
// runs its CUDA path's device plumbing on the emulated GPU (WEFT_EMULATE_GPU=1, device.h), which
// allocates the model, its activations and the KV cache on a device of its own and fails any
// kernel that mixes it with host tensors and any host code that touches its memory outside a
// kernel, collective or copy. The kernels are the CPU ones, so each run must equal --device cpu
// bit for bit: the same losses, gradients, checkpoints and tokens. (On a GPU the CUDA kernels
// replace them: tests/gpu/cli_device_gpu_test.cc.)
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/core/device.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

// Runs `weft ARGS` on `ranks` ranks with WEFT_EMULATE_GPU set as given.
RunResult run_emulated(const std::string& args, int ranks, bool emulate = true) {
  if (emulate) {
    setenv("WEFT_EMULATE_GPU", "1", 1);
  } else {
    unsetenv("WEFT_EMULATE_GPU");
  }
  RunResult r = run_weft(args, ranks);
  unsetenv("WEFT_EMULATE_GPU");
  return r;
}

struct Scratch {
  std::string dir = make_temp_dir("weft_device");
};

// Training (with a checkpoint and a validation loss) on `mesh` with `device`, in a new directory
// (returned): its metrics.jsonl and ckpt.
std::string train(const std::string& device, const std::string& mesh, int ranks) {
  const std::string dir = make_temp_dir("weft_device_train");
  RunResult r = run_emulated(
      absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", train_tokens(),
                   " --global-batch 4 --seq-len 12 --lr 1e-3 --eps 1e-3 --steps 3 --save ", dir,
                   "/ckpt --eval-data ", train_tokens(), " --eval-every 2 --metrics ", dir,
                   "/metrics.jsonl --device ", device, " ", mesh),
      ranks, device == "cuda");
  EXPECT_EQ(r.exit_code, 0) << mesh << ": " << r.err;
  return dir;
}

TEST(Device, EmulatedGpuTrainsAsTheCpuDoes) {
  for (const auto& [mesh, ranks] : std::vector<std::pair<std::string, int>>{
           {"", 1}, {"--tp 2 --precision bf16", 2}, {"--pp 2 --micro-batch 1", 2}}) {
    SCOPED_TRACE(mesh);
    const std::string cpu = train("cpu", mesh, ranks), gpu = train("cuda", mesh, ranks);
    EXPECT_EQ(metric_losses(gpu + "/metrics.jsonl"), metric_losses(cpu + "/metrics.jsonl"));
    EXPECT_NE(read_text(gpu + "/metrics.jsonl").find("eval_loss"), std::string::npos);
    expect_same_tensors(export_weights(gpu), export_weights(cpu), 0);
  }
}

TEST(Device, EmulatedGpuEvaluatesAndGeneratesAsTheCpuDoes) {
  Scratch s;
  const std::string model = model_fixture("llama_gqa");
  for (const auto& [mesh, ranks] :
       std::vector<std::pair<std::string, int>>{{"", 1}, {"--tp 2", 2}, {"--sp 2", 2}}) {
    SCOPED_TRACE(mesh);
    std::string out[2];
    for (int gpu = 0; gpu < 2; ++gpu) {
      out[gpu] = absl::StrCat(s.dir, "/eval", gpu, ranks, mesh.size(), ".safetensors");
      RunResult r = run_emulated(
          absl::StrCat("eval --model ", model, " --tokens ", train_tokens(), " --out ", out[gpu],
                       " --grads --device ", gpu ? "cuda" : "cpu", " ", mesh),
          ranks, gpu == 1);
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    expect_same_tensors(out[1], out[0], 0);
  }
  // Generation through the serving engine: paged KV cache, tensor parallelism, shift
  // parallelism's sequence-parallel steps and TokenWeave's halves, on the (emulated) device.
  const std::string gen =
      absl::StrCat("generate --model ", model, " --prompt-ids 1,2,3 --max-new-tokens 10 ");
  RunResult cpu = run_emulated(gen + "--device cpu", 1, false);
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  for (const std::string& mesh :
       {"--tp 2", "--tp 2 --token-weave", "--shift-parallel --sp 2 --tp 2 --shift-threshold 0"}) {
    RunResult r = run_emulated(gen + "--device cuda " + mesh, 2);
    ASSERT_EQ(r.exit_code, 0) << mesh << ": " << r.err;
    EXPECT_EQ(r.out, cpu.out) << mesh;
  }
}

TEST(Device, BadDeviceFlagsNameTheProblem) {
  const std::string gen = absl::StrCat("generate --model ", model_fixture("llama_gqa"),
                                       " --prompt-ids 1 ", "--max-new-tokens 1 ");
  RunResult bad = run_emulated(gen + "--device tpu", 1, false);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--device 'tpu': expected cpu or cuda"), std::string::npos) << bad.err;
  RunResult zero = run_emulated(gen + "--gpus-per-node 0", 1, false);
  EXPECT_EQ(zero.exit_code, 1);
  EXPECT_NE(zero.err.find("--gpus-per-node"), std::string::npos) << zero.err;
  if (cuda_device_count() == 0) {
    // No GPU here: --device cuda is refused with the reason, and the default is the CPU.
    RunResult cuda = run_emulated(gen + "--device cuda", 1, false);
    EXPECT_EQ(cuda.exit_code, 1);
    EXPECT_NE(cuda.err.find("--device cuda: "), std::string::npos) << cuda.err;
    EXPECT_EQ(run_emulated(gen, 1, false).exit_code, 0);
  }
}

}  // namespace
}  // namespace weft::testing
