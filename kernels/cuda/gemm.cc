// GEMM and linear layers through cuBLASLt. f32 inputs use CUBLAS_COMPUTE_32F without TF32 (so
// results match the CPU path closely); bf16/f16 inputs multiply in f32 too. Row-major
// operands become column-major ones by computing C^T = op(B)^T op(A)^T: the row-major storage
// of a matrix is its transpose in column-major order, so no data moves.
#include <cublasLt.h>

#include <array>
#include <memory>
#include <mutex>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/stream.h"
#include "runtime/core/cuda_check.h"

#define WEFT_CUBLAS_CHECK(call)                                           \
  do {                                                                    \
    cublasStatus_t weft_cublas_status_ = (call);                          \
    WEFT_CHECK(weft_cublas_status_ == CUBLAS_STATUS_SUCCESS)              \
        << #call << ": " << cublasLtGetStatusString(weft_cublas_status_); \
  } while (0)

namespace weft::kernels::cuda {
namespace {

constexpr int kMaxDevices = 16;
// Hopper kernels want up to 32 MiB of workspace.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// One cuBLASLt handle and workspace per device, made on first use and kept for the life of the
// process (freeing them from a static destructor would run after the CUDA runtime unloads).
struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

LtContext& lt_context() {
  static std::mutex mutex;
  static std::array<LtContext, kMaxDevices> contexts;
  int device = 0;
  WEFT_CUDA_CHECK(cudaGetDevice(&device));
  WEFT_CHECK(device >= 0 && device < kMaxDevices) << "CUDA device " << device;
  std::lock_guard<std::mutex> lock(mutex);
  LtContext& ctx = contexts[device];
  if (ctx.handle == nullptr) {
    WEFT_CUBLAS_CHECK(cublasLtCreate(&ctx.handle));
    WEFT_CUDA_CHECK(cudaMalloc(&ctx.workspace, kWorkspaceBytes));
  }
  return ctx;
}

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      WEFT_CHECK(false) << "gemm on " << dtype_name(dtype) << " tensors";
  }
  return CUDA_R_32F;
}

// Largest power of two (up to 256) dividing the address: tells the heuristic which kernels
// can read a sliced operand.
uint32_t alignment_of(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  uint32_t align = 256;
  while (align > 1 && address % align != 0) align /= 2;
  return align;
}

// RAII owners of the cuBLASLt descriptors of one call.
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayoutOpaque_t* p) const { cublasLtMatrixLayoutDestroy(p); }
};
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;

// The column-major layout of a row-major [rows, cols] matrix: cols x rows, leading dim cols.
Layout column_major_layout(const Tensor& t) {
  cublasLtMatrixLayout_t layout = nullptr;
  WEFT_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&layout, cuda_type(t.dtype()), t.dim(1), t.dim(0), t.dim(1)));
  return Layout(layout);
}

struct DescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* p) const { cublasLtMatmulDescDestroy(p); }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};

void set_alignment(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
                   const void* ptr) {
  const uint32_t align = alignment_of(ptr);
  WEFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
}

// c = alpha op(a) op(b) + beta c for a dtype combination cuBLASLt supports: a and b alike, c
// alike or f32. m, n, k > 0.
void lt_matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
               float beta) {
  LtContext& ctx = lt_context();

  cublasLtMatmulDesc_t raw_desc = nullptr;
  WEFT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  std::unique_ptr<cublasLtMatmulDescOpaque_t, DescDeleter> desc(raw_desc);
  // cuBLAS's A is our b and its B is our a (see the top of this file).
  const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  WEFT_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  WEFT_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));

  const Layout layout_a = column_major_layout(b);
  const Layout layout_b = column_major_layout(a);
  const Layout layout_c = column_major_layout(c);

  cublasLtMatmulPreference_t raw_pref = nullptr;
  WEFT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref));
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter> pref(raw_pref);
  WEFT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &kWorkspaceBytes, sizeof(kWorkspaceBytes)));
  set_alignment(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, b.raw());
  set_alignment(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, a.raw());
  set_alignment(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, c.raw());
  set_alignment(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, c.raw());

  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  WEFT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, desc.get(), layout_a.get(),
                                                   layout_b.get(), layout_c.get(), layout_c.get(),
                                                   pref.get(), 1, &heuristic, &found));
  WEFT_CHECK(found > 0) << "cuBLASLt has no algorithm for " << a.str() << (trans_a ? "^T" : "")
                        << " @ " << b.str() << (trans_b ? "^T" : "") << " -> " << c.str();

  WEFT_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, desc.get(), &alpha, b.raw(), layout_a.get(), a.raw(),
                                   layout_b.get(), &beta, c.raw(), layout_c.get(), c.raw(),
                                   layout_c.get(), &heuristic.algo, ctx.workspace, kWorkspaceBytes,
                                   compute_stream()));
}

bool lt_supports(DType a, DType b, DType c) { return a == b && (c == a || c == DType::kF32); }

// An f32 copy of a floating tensor (the tensor itself when it already is f32).
Tensor as_f32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  Tensor out = Tensor::empty(t.shape(), DType::kF32, t.device());
  cast_into(t, out);
  return out;
}

// The tensor as a 2-D [rows, cols] view, rows = the product of all leading dimensions.
Tensor as_rows(const Tensor& t) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < t.ndim(); ++i) rows *= t.dim(i);
  return t.view({rows, t.dim(-1)});
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  const int64_t m = c.dim(0);
  const int64_t n = c.dim(1);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // c = beta c, without reading c when beta is 0 (BLAS semantics)
    if (beta == 0.0f) {
      fill_(c, 0.0f);
    } else {
      scale_(c, beta);
    }
    return;
  }
  if (lt_supports(a.dtype(), b.dtype(), c.dtype())) {
    lt_matmul(a, trans_a, b, trans_b, c, alpha, beta);
    return;
  }
  // Mixed storage (e.g. f32 activations with bf16 weights): multiply f32 copies.
  const Tensor a32 = as_f32(a);
  const Tensor b32 = as_f32(b);
  Tensor c32 = c.dtype() == DType::kF32 ? c : Tensor::empty(c.shape(), DType::kF32, c.device());
  if (c32.raw() != c.raw() && beta != 0.0f) cast_into(c, c32);
  lt_matmul(a32, trans_a, b32, trans_b, c32, alpha, beta);
  if (c32.raw() != c.raw()) cast_into(c32, c);
}

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  Tensor y2 = as_rows(y);  // [N, out]
  gemm(as_rows(x), false, w, true, y2, 1.0f, 0.0f);
  if (bias != nullptr) add_bias_rows(y2, *bias);
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                     Tensor* db) {
  const Tensor dy2 = as_rows(dy);  // [N, out]
  if (dx != nullptr) {
    Tensor dx2 = as_rows(*dx);  // [N, in]
    gemm(dy2, false, w, false, dx2, 1.0f, 0.0f);
  }
  if (dw != nullptr) gemm(dy2, true, as_rows(x), false, *dw, 1.0f, 1.0f);
  if (db != nullptr) add_column_sums(dy2, Tensor(), Tensor(), *db);
}

}  // namespace weft::kernels::cuda
