// CPU implementations (f32; OpenBLAS for GEMM) of every function in kernels/ops.h.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace weft::kernels::cpu {
#include "kernels/backend_ops.inc"
}  // namespace weft::kernels::cpu
