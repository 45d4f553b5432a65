// Uses weft's libraries from an installed copy: a tensor kernel (weft::kernels), a SHA-256
// (weft::io), a generated protobuf message (weft::io's headers), the learning-rate schedule
// (weft::train).
#include <cstdio>

#include "kernels/ops.h"
#include "runtime/core/tensor.h"
#include "runtime/io/run_config.pb.h"
#include "runtime/io/sha256.h"
#include "runtime/train/lr_schedule.h"

int main() {
  using weft::Tensor;
  const Tensor a = Tensor::from_floats({1, 2, 3, 4}, {2, 2});
  const Tensor b = Tensor::from_floats({5, 6, 7, 8}, {2, 2});
  Tensor c = Tensor::zeros({2, 2});
  weft::kernels::gemm(a, false, b, false, c);  // [[19, 22], [43, 50]]
  weft::io::Sha256 sha;
  sha.update("abc");
  weft::io::RunConfig config;
  config.set_steps(100);
  const weft::train::LrSchedule schedule{.decay = weft::train::LrDecay::kCosine,
                                         .peak = 1.0,
                                         .warmup_steps = 0,
                                         .min_lr = 0.0,
                                         .steps = config.steps()};
  std::printf("matmul %g %g %g %g\n", c.data<float>()[0], c.data<float>()[1], c.data<float>()[2],
              c.data<float>()[3]);
  std::printf("sha256 %s\n", sha.hex_digest().c_str());
  std::printf("lr %.6f\n", schedule.at(50));
  return 0;
}
