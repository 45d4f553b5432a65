// CUDA implementations (cuBLASLt for GEMM, .cu kernels for the rest; f32 or bf16 storage, f32
// accumulation) of every function in kernels/ops.h. Plain C++ declarations: callers need no
// CUDA headers.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace weft::kernels::cuda {
#include "kernels/backend_ops.inc"
}  // namespace weft::kernels::cuda
