// WEFT_CUDA_CHECK(call): aborts naming file:line and the CUDA error string. Only meaningful in a
// CUDA build; in a CPU build it is not defined, so CUDA-only code must sit behind
// WEFT_HAVE_CUDA.
#pragma once

#ifdef WEFT_HAVE_CUDA
#include <cuda_runtime.h>

#include "runtime/core/check.h"

#define WEFT_CUDA_CHECK(call)                                                            \
  do {                                                                                   \
    cudaError_t weft_cuda_err_ = (call);                                                 \
    WEFT_CHECK(weft_cuda_err_ == cudaSuccess) << #call << ": " << cudaGetErrorString(weft_cuda_err_); \
  } while (0)
#endif
