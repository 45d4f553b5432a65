#include "runtime/core/device_select.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace weft {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int out = 0;
  return v != nullptr && absl::SimpleAtoi(v, &out) && out >= 0 ? out : fallback;
}

}  // namespace

DeviceEnv device_env() {
  DeviceEnv env;
#ifdef WEFT_HAVE_CUDA
  env.cuda_build = true;
#endif
  env.visible_gpus = cuda_device_count();
  env.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK",
                           env_int("SLURM_LOCALID", env_int("MPI_LOCALRANKID", 0)));
  const char* emulate = std::getenv("WEFT_EMULATE_GPU");
  env.emulate_gpu = emulate != nullptr && std::string(emulate) == "1";
  const char* device = std::getenv("WEFT_DEVICE");
  env.default_device = device != nullptr ? device : "";
  return env;
}

absl::StatusOr<Device> select_device(const std::string& flag, int gpus_per_node,
                                     const DeviceEnv& env) {
  const std::string want = flag.empty() ? env.default_device : flag;
  if (want != "" && want != "cpu" && want != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat(flag.empty() ? "WEFT_DEVICE" : "--device", " '",
                                                   want, "': expected cpu or cuda"));
  }
  if (gpus_per_node < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpus-per-node ", gpus_per_node, " must be at least 1"));
  }
  if (want == "cpu") return Device::cpu();
  if (env.emulate_gpu && want == "cuda") return Device::emulated_gpu();
  if (want.empty() && env.visible_gpus == 0) return Device::cpu();
  if (!env.cuda_build) {
    return absl::FailedPreconditionError(
        "--device cuda: this weft build has no CUDA support (build it where nvcc is found, or "
        "with -DWEFT_CUDA=ON)");
  }
  if (env.visible_gpus == 0) {
    return absl::FailedPreconditionError(
        "--device cuda: no GPU is visible to this rank (check CUDA_VISIBLE_DEVICES and "
        "nvidia-smi), or use --device cpu");
  }
  const int per_node = gpus_per_node > 0 ? gpus_per_node : env.visible_gpus;
  if (per_node > env.visible_gpus) {
    return absl::InvalidArgumentError(absl::StrCat("--gpus-per-node ", per_node, ": only ",
                                                   env.visible_gpus,
                                                   " GPUs are visible to this rank"));
  }
  return Device::cuda(env.local_rank % per_node);
}

}  // namespace weft
