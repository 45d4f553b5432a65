// Device-side helpers shared by the .cu kernel files: dtype-erased element access (f32, bf16,
// f16 storage, f32 arithmetic), index access (i32/i64), warp and block reductions, launch sizes.
//
// Element access branches on the dtype at run time. The branch is uniform across a warp, so it
// costs little, and it keeps one compiled kernel per operation whatever mix of storage dtypes
// the caller passes (nvcc time matters on small build machines).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/stream.h"
#include "runtime/core/cuda_check.h"
#include "runtime/core/tensor.h"

// Checks the launch that was just issued (bad configuration, missing kernel image).
#define WEFT_CUDA_LAUNCH_CHECK() WEFT_CUDA_CHECK(cudaGetLastError())

namespace weft::kernels::cuda {

// A floating tensor's memory, read and written as f32. `data == nullptr` stands for an
// undefined optional tensor (reads as zero where a kernel allows that).
struct FloatRef {
  void* data = nullptr;
  DType dtype = DType::kF32;

  __device__ float load(int64_t i) const {
    switch (dtype) {
      case DType::kBF16:
        return __bfloat162float(static_cast<const __nv_bfloat16*>(data)[i]);
      case DType::kF16:
        return __half2float(static_cast<const __half*>(data)[i]);
      default:
        return static_cast<const float*>(data)[i];
    }
  }
  __device__ void store(int64_t i, float v) const {
    switch (dtype) {
      case DType::kBF16:
        static_cast<__nv_bfloat16*>(data)[i] = __float2bfloat16(v);
        break;
      case DType::kF16:
        static_cast<__half*>(data)[i] = __float2half(v);
        break;
      default:
        static_cast<float*>(data)[i] = v;
    }
  }
  __device__ void atomic_add(int64_t i, float v) const {
    switch (dtype) {
      case DType::kBF16:
        atomicAdd(static_cast<__nv_bfloat16*>(data) + i, __float2bfloat16(v));
        break;
      case DType::kF16:
        atomicAdd(static_cast<__half*>(data) + i, __float2half(v));
        break;
      default:
        atomicAdd(static_cast<float*>(data) + i, v);
    }
  }
};

// An integer index tensor (ids, targets, positions): i32 or i64.
struct IndexRef {
  const void* data = nullptr;
  bool wide = false;  // i64

  __device__ int64_t load(int64_t i) const {
    return wide ? static_cast<const int64_t*>(data)[i]
                : static_cast<int64_t>(static_cast<const int32_t*>(data)[i]);
  }
};

inline FloatRef float_ref(const Tensor& t) {
  WEFT_CHECK(is_floating(t.dtype())) << "expected a floating tensor, got " << t.str();
  return {t.raw(), t.dtype()};
}
// Undefined tensors give a null reference.
inline FloatRef optional_float_ref(const Tensor& t) {
  return t.defined() ? float_ref(t) : FloatRef{};
}
inline IndexRef index_ref(const Tensor& t) {
  WEFT_CHECK(t.dtype() == DType::kI32 || t.dtype() == DType::kI64)
      << "expected an i32 or i64 index tensor, got " << t.str();
  return {t.raw(), t.dtype() == DType::kI64};
}

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Blocks for a grid-stride loop over n items, or over n rows with one warp per row.
inline int grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, 65535));
}
inline int warp_grid_for(int64_t rows, int threads) { return grid_for(rows * kWarp, threads); }

// A grid-stride range: `for (int64_t i : grid_stride(n))` visits this thread's share of
// [0, n); `warp_stride(n)` gives each warp (all its lanes alike) its share of n rows.
class GridRange {
 public:
  struct Iterator {
    int64_t i;
    int64_t step;
    __device__ int64_t operator*() const { return i; }
    __device__ Iterator& operator++() {
      i += step;
      return *this;
    }
    __device__ bool operator!=(const Iterator& end) const { return i < end.i; }
  };
  __device__ GridRange(int64_t n, int64_t first, int64_t step)
      : n_(n), first_(first), step_(step) {}
  __device__ Iterator begin() const { return {first_, step_}; }
  __device__ Iterator end() const { return {n_, 0}; }

 private:
  int64_t n_;
  int64_t first_;
  int64_t step_;
};

__device__ inline GridRange grid_stride(int64_t n) {
  return {n, blockIdx.x * int64_t{blockDim.x} + threadIdx.x, gridDim.x * int64_t{blockDim.x}};
}
__device__ inline GridRange warp_stride(int64_t n) {
  return {n, (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / kWarp,
          gridDim.x * int64_t{blockDim.x} / kWarp};
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
  static constexpr float kIdentity = 0.0f;
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
  static constexpr float kIdentity = -INFINITY;
};

template <typename T, typename Op>
__device__ inline T warp_reduce(T v, Op op) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// Every thread of the block gets the result. blockDim.x must be a multiple of 32. Safe to call
// repeatedly in one kernel (the first barrier protects the scratch from the previous call).
template <typename Op>
__device__ inline float block_reduce(float v, Op op) {
  __shared__ float partial[kWarp];
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / kWarp) ? partial[lane] : Op::kIdentity;
  return warp_reduce(v, op);
}

// Threads per block for kernels that put one row in one block.
constexpr int kRowThreads = 256;
// Threads per block for elementwise grid-stride kernels.
constexpr int kThreads = 256;

}  // namespace weft::kernels::cuda
