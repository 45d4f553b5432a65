// --device / --gpus-per-node resolution (runtime/core/device_select.h) and the emulated GPU's
// checks (runtime/core/device.h, tensor.h DeviceAccess) that the device path's CLI tests rely on.
#include "runtime/core/device_select.h"

#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "runtime/core/tensor.h"

namespace weft {
namespace {

DeviceEnv gpus(int visible, int local_rank) {
  return {.visible_gpus = visible, .cuda_build = true, .local_rank = local_rank};
}

TEST(SelectDevice, DefaultIsCudaWhenAGpuIsVisible) {
  EXPECT_EQ(select_device("", 0, gpus(0, 0)).value(), Device::cpu());
  EXPECT_EQ(select_device("", 0, gpus(4, 2)).value(), Device::cuda(2));
  EXPECT_EQ(select_device("cpu", 0, gpus(4, 2)).value(), Device::cpu());
}

TEST(SelectDevice, WeftDeviceIsTheDefaultTheFlagOverrides) {
  DeviceEnv env = gpus(2, 1);
  env.default_device = "cpu";
  EXPECT_EQ(select_device("", 0, env).value(), Device::cpu());
  EXPECT_EQ(select_device("cuda", 0, env).value(), Device::cuda(1));
  env.default_device = "tpu";
  EXPECT_EQ(select_device("", 0, env).status().message(),
            "WEFT_DEVICE 'tpu': expected cpu or cuda");
}

TEST(SelectDevice, OneGpuPerLocalRankRoundRobin) {
  EXPECT_EQ(select_device("cuda", 0, gpus(8, 7)).value(), Device::cuda(7));
  EXPECT_EQ(select_device("cuda", 0, gpus(4, 5)).value(), Device::cuda(1));
  EXPECT_EQ(select_device("cuda", 2, gpus(4, 5)).value(), Device::cuda(1));
  EXPECT_EQ(select_device("cuda", 2, gpus(4, 2)).value(), Device::cuda(0));
  // Under Slurm's task binding each rank sees its one GPU as device 0.
  EXPECT_EQ(select_device("cuda", 0, gpus(1, 3)).value(), Device::cuda(0));
}

TEST(SelectDevice, ErrorsNameWhatIsMissing) {
  auto message = [](const absl::StatusOr<Device>& d) { return std::string(d.status().message()); };
  EXPECT_EQ(message(select_device("gpu", 0, gpus(1, 0))), "--device 'gpu': expected cpu or cuda");
  EXPECT_NE(message(select_device("cuda", 0, gpus(0, 0))).find("no GPU is visible"),
            std::string::npos);
  DeviceEnv cpu_build;
  EXPECT_NE(message(select_device("cuda", 0, cpu_build)).find("no CUDA support"),
            std::string::npos);
  EXPECT_NE(message(select_device("cuda", 4, gpus(2, 0))).find("only 2 GPUs are visible"),
            std::string::npos);
}

TEST(SelectDevice, EmulationTurnsCudaIntoTheEmulatedGpu) {
  DeviceEnv env;
  env.emulate_gpu = true;
  EXPECT_EQ(select_device("cuda", 0, env).value(), Device::emulated_gpu());
  EXPECT_EQ(select_device("", 0, env).value(), Device::cpu());
}

TEST(EmulatedGpu, HostCodeMayNotTouchItsMemory) {
  Tensor t = Tensor::zeros({4}, DType::kF32, Device::emulated_gpu());
  EXPECT_DEATH((void)t.data<float>(), "host code touched f32\\[4\\] emulated-gpu");
  // Explicit copies and kernels may.
  EXPECT_EQ(t.to_floats(), std::vector<float>(4, 0.0f));
  kernels::fill_(t, 2.0f);
  EXPECT_EQ(t.host().to_floats(), std::vector<float>(4, 2.0f));
  {
    const DeviceAccess access;
    EXPECT_EQ(t.data<float>()[3], 2.0f);
  }
  // A kernel given it and a host tensor fails the same-device check.
  Tensor host = Tensor::zeros({4}, DType::kF32, Device::cpu());
  EXPECT_DEATH(kernels::add_(t, host, 1.0f), "tensors on emulated-gpu and cpu");
}

TEST(EmulatedGpu, DefaultDeviceIsWhereTensorsAllocate) {
  set_default_device(Device::emulated_gpu());
  EXPECT_EQ(Tensor::empty({2}).device(), Device::emulated_gpu());
  EXPECT_EQ(Tensor::full({2}, 1.0f).device(), Device::emulated_gpu());
  EXPECT_EQ(Tensor::from_ints({1, 2}, {2}).device(), Device::cpu());  // host values stay home
  EXPECT_EQ(Tensor::empty({2}, DType::kF32, Device::cpu()).device(), Device::cpu());
  set_default_device(Device::cpu());
  EXPECT_EQ(Tensor::empty({2}).device(), Device::cpu());
}

}  // namespace
}  // namespace weft
