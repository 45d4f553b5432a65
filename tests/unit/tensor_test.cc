#include <gtest/gtest.h>

#include "runtime/core/allocator.h"
#include "runtime/core/tensor.h"

namespace weft {
namespace {

TEST(Tensor, SliceAndViewShareStorage) {
  Tensor t = Tensor::from_floats({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor rows = t.slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.to_floats(), (std::vector<float>{2, 3, 4, 5}));
  rows.data<float>()[0] = 42;
  EXPECT_EQ(t.data<float>()[2], 42);
  Tensor flat = t.view({-1});
  EXPECT_EQ(flat.shape(), (Shape{6}));
  EXPECT_EQ(flat.data<float>()[2], 42);
}

TEST(Tensor, CloneIsIndependent) {
  Tensor t = Tensor::from_floats({1, 2}, {2});
  Tensor c = t.clone();
  c.data<float>()[0] = 7;
  EXPECT_EQ(t.data<float>()[0], 1);
}

TEST(Tensor, Bf16AndF16RoundTrip) {
  std::vector<float> values = {0.0f, 1.0f, -2.5f, 3.140625f, 65504.0f, 1e-6f, -0.0f};
  Tensor t = Tensor::from_floats(values, {7});
  EXPECT_EQ(t.to_dtype(DType::kBF16).to_dtype(DType::kF32).to_floats()[3], 3.140625f);
  std::vector<float> back = t.to_dtype(DType::kF16).to_floats();
  EXPECT_EQ(back[1], 1.0f);
  EXPECT_EQ(back[2], -2.5f);
  EXPECT_EQ(back[4], 65504.0f);
  EXPECT_NEAR(back[5], 1e-6f, 1e-7f);  // f16 subnormal
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
}

TEST(Allocator, TracksLiveAndPeakBytes) {
  const Device cpu = Device::cpu();
  reset_peak_memory(cpu);
  const int64_t base = memory_stats(cpu).live_bytes;
  {
    Tensor a = Tensor::empty({1024});  // 4096 bytes
    Tensor b = Tensor::empty({256});   // 1024 bytes
    EXPECT_EQ(memory_stats(cpu).live_bytes - base, 5120);
  }
  EXPECT_EQ(memory_stats(cpu).live_bytes, base);
  EXPECT_EQ(memory_stats(cpu).peak_bytes - base, 5120);
}

TEST(DType, NamesRoundTripAndUnknownIsAnError) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64, DType::kU8}) {
    EXPECT_EQ(dtype_from_name(dtype_name(d)).value(), d);
  }
  EXPECT_FALSE(dtype_from_name("F64").ok());
}

}  // namespace
}  // namespace weft
