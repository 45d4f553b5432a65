// Element types and the 16-bit float conversions the CPU path needs (it computes in f32).
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace weft {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64, kU8 };

size_t dtype_size(DType dtype);
// Names as safetensors spells them: "F32", "BF16", "F16", "I32", "I64", "U8".
std::string_view dtype_name(DType dtype);
absl::StatusOr<DType> dtype_from_name(std::string_view name);
bool is_floating(DType dtype);

// C++ type -> DType, for Tensor::data<T>().
template <typename T>
struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kF32; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kI32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kI64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kU8; };

// bfloat16: the top 16 bits of an IEEE f32; rounding to nearest even, NaN kept quiet.
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// IEEE half precision.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace weft
