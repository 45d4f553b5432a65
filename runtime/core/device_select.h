// Which device a rank runs on: `--device cpu|cuda` (default: $WEFT_DEVICE if set, else cuda when
// this build has CUDA and a GPU is visible) and `--gpus-per-node N` (default: every visible GPU).
// One GPU per local rank: local rank r takes GPU r % N, so N ranks per node share nothing, and more
// ranks than GPUs share them round-robin.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/core/device.h"

namespace weft {

struct DeviceEnv {
  int visible_gpus = 0;      // cudaGetDeviceCount (0 in a CPU-only build)
  bool cuda_build = false;   // built with CUDA
  int local_rank = 0;        // this rank's index on its node
  bool emulate_gpu = false;  // WEFT_EMULATE_GPU=1: cuda means the emulated GPU (device.h)
  // WEFT_DEVICE: the device when --device is not given ("" : by the GPUs). The test suite sets
  // cpu, so that its CPU tests stay on the CPU on a GPU machine.
  std::string default_device;
};

// This process's: the visible GPUs, the build, the local rank from OMPI_COMM_WORLD_LOCAL_RANK,
// else SLURM_LOCALID, else MPI_LOCALRANKID (MPICH), else 0; WEFT_EMULATE_GPU; WEFT_DEVICE.
DeviceEnv device_env();

// `want`: "cpu", "cuda" or "" (env.default_device, else by the GPUs). `gpus_per_node`: 0 for every
// visible GPU. Errors name the flag and what is missing: cuda in a CPU-only build or with no GPU
// visible, more GPUs per node than are visible, an unknown device.
absl::StatusOr<Device> select_device(const std::string& want, int gpus_per_node,
                                     const DeviceEnv& env);

}  // namespace weft
