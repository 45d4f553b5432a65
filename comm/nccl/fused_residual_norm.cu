#include "comm/nccl/fused_residual_norm.h"

#include <cuda.h>
#include <cuda/atomic>
#include <nccl_device.h>

#include "comm/nccl/nccl_check.h"
#include "kernels/cuda/stream.h"
#include "runtime/core/check.h"
#include "runtime/core/cuda_check.h"

namespace weft::comm {

namespace {

constexpr int kThreads = 256;
constexpr int kBlocks = 32;  // one LSA barrier each

__device__ __forceinline__ float4 multimem_ld_reduce_add(const float* mc) {
  float4 v;
  asm volatile("multimem.ld_reduce.relaxed.sys.global.add.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "l"(mc)
               : "memory");
  return v;
}

__device__ __forceinline__ void multimem_st(float* mc, float4 v) {
  asm volatile("multimem.st.relaxed.sys.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(mc),
               "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w)
               : "memory");
}

// Sum over the block's threads (every thread gets it).
__device__ float block_sum(float v) {
  __shared__ float partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  __syncthreads();
  return total;
}

// Block b handles rows b, b + gridDim.x, ... of this rank's share; hidden % 4 == 0.
__global__ void fused_residual_norm_kernel(ncclDevComm dev, ncclWindow_t partial_win,
                                           ncclWindow_t normed_win, int64_t rows, int64_t hidden,
                                           float* residual, const float* weight, float eps) {
  ncclLsaBarrierSession<ncclCoopCta> before(ncclCoopCta(), dev, ncclTeamTagLsa(), blockIdx.x);
  before.sync(ncclCoopCta(), cuda::memory_order_acquire);  // every rank's partial is written
  const int64_t share = rows / dev.lsaSize, first = dev.lsaRank * share;
  const int64_t row_bytes = hidden * static_cast<int64_t>(sizeof(float));
  for (int64_t i = blockIdx.x; i < share; i += gridDim.x) {
    const int64_t row = first + i;
    const float* in_mc = static_cast<const float*>(
        ncclGetLsaMultimemPointer(partial_win, row * row_bytes, dev));
    float* out_mc = static_cast<float*>(ncclGetLsaMultimemPointer(normed_win, row * row_bytes, dev));
    float* h = residual + i * hidden;
    float sumsq = 0;
    for (int64_t j = 4 * threadIdx.x; j < hidden; j += 4 * kThreads) {
      const float4 s = multimem_ld_reduce_add(in_mc + j);
      float4 v = *reinterpret_cast<float4*>(h + j);
      v.x += s.x;
      v.y += s.y;
      v.z += s.z;
      v.w += s.w;
      *reinterpret_cast<float4*>(h + j) = v;
      sumsq += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    const float rstd = rsqrtf(block_sum(sumsq) / static_cast<float>(hidden) + eps);
    for (int64_t j = 4 * threadIdx.x; j < hidden; j += 4 * kThreads) {
      const float4 v = *reinterpret_cast<const float4*>(h + j);
      const float4 w = *reinterpret_cast<const float4*>(weight + j);
      multimem_st(out_mc + j, make_float4(v.x * rstd * w.x, v.y * rstd * w.y, v.z * rstd * w.z,
                                          v.w * rstd * w.w));
    }
  }
  ncclLsaBarrierSession<ncclCoopCta> after(ncclCoopCta(), dev, ncclTeamTagLsa(),
                                           gridDim.x + blockIdx.x);
  after.sync(ncclCoopCta(), cuda::memory_order_release);  // every rank's rows have arrived
}

// CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED through the driver entry point the runtime hands out
// (linking libcuda itself would make the binary need a driver on CPU-only machines).
bool multicast_supported(int device) {
  using GetAttribute = CUresult (*)(int*, CUdevice_attribute, CUdevice);
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (cudaGetDriverEntryPointByVersion("cuDeviceGetAttribute", &fn, 12000, cudaEnableDefault,
                                       &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess || fn == nullptr) {
    return false;
  }
  int value = 0;
  return reinterpret_cast<GetAttribute>(fn)(&value, CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED,
                                            device) == CUDA_SUCCESS &&
         value != 0;
}

}  // namespace

struct FusedResidualNorm::State {
  ncclComm_t comm = nullptr;
  int64_t max_rows = 0, hidden = 0;
  int device = 0;
  void* partial = nullptr;
  void* normed = nullptr;
  ncclWindow_t partial_win = nullptr;
  ncclWindow_t normed_win = nullptr;
  ncclDevComm dev{};
  bool dev_created = false;
};

std::unique_ptr<FusedResidualNorm> FusedResidualNorm::create(ncclComm_t comm, int64_t max_rows,
                                                             int64_t hidden) {
  WEFT_CHECK(hidden % 4 == 0) << "the fused residual norm needs hidden % 4 == 0, got " << hidden;
  int device = 0;
  WEFT_CUDA_CHECK(cudaGetDevice(&device));
  // NVLS multimem needs switch multicast (Hopper with NVSwitch): without it, the unfused path.
  if (!multicast_supported(device)) return nullptr;
  std::unique_ptr<FusedResidualNorm> out(new FusedResidualNorm());
  out->state_ = std::make_unique<State>();
  State& s = *out->state_;
  s.comm = comm;
  s.max_rows = max_rows;
  s.hidden = hidden;
  s.device = device;
  const size_t bytes = static_cast<size_t>(max_rows * hidden) * sizeof(float);
  WEFT_NCCL_CHECK(ncclMemAlloc(&s.partial, bytes));
  WEFT_NCCL_CHECK(ncclMemAlloc(&s.normed, bytes));
  WEFT_NCCL_CHECK(
      ncclCommWindowRegister(comm, s.partial, bytes, &s.partial_win, NCCL_WIN_COLL_SYMMETRIC));
  WEFT_NCCL_CHECK(
      ncclCommWindowRegister(comm, s.normed, bytes, &s.normed_win, NCCL_WIN_COLL_SYMMETRIC));
  ncclDevCommRequirements reqs{};
  reqs.lsaMultimem = true;
  reqs.lsaBarrierCount = 2 * kBlocks;  // the barrier before and the one after, per block
  WEFT_NCCL_CHECK(ncclDevCommCreate(comm, &reqs, &s.dev));
  s.dev_created = true;
  return out;
}

FusedResidualNorm::~FusedResidualNorm() {
  if (state_ == nullptr) return;
  State& s = *state_;
  if (s.dev_created) ncclDevCommDestroy(s.comm, &s.dev);
  if (s.normed_win != nullptr) ncclCommWindowDeregister(s.comm, s.normed_win);
  if (s.partial_win != nullptr) ncclCommWindowDeregister(s.comm, s.partial_win);
  if (s.normed != nullptr) ncclMemFree(s.normed);
  if (s.partial != nullptr) ncclMemFree(s.partial);
}

Tensor FusedResidualNorm::partial(int64_t rows) const {
  WEFT_CHECK(rows <= state_->max_rows) << rows << " rows, the window holds " << state_->max_rows;
  return Tensor::borrow(state_->partial, {rows, state_->hidden}, DType::kF32,
                        Device::cuda(state_->device), nullptr);
}

Tensor FusedResidualNorm::normed(int64_t rows) const {
  WEFT_CHECK(rows <= state_->max_rows) << rows << " rows, the window holds " << state_->max_rows;
  return Tensor::borrow(state_->normed, {rows, state_->hidden}, DType::kF32,
                        Device::cuda(state_->device), nullptr);
}

void FusedResidualNorm::run(int64_t rows, Tensor& residual, const Tensor& weight, float eps) {
  const State& s = *state_;
  WEFT_CHECK(rows <= s.max_rows && rows % s.dev.lsaSize == 0)
      << "fused residual norm: " << rows << " rows over " << s.dev.lsaSize << " ranks (at most "
      << s.max_rows << ")";
  const bool shapes = residual.device().is_cuda() && residual.dtype() == DType::kF32 &&
                      residual.shape() == Shape{rows / s.dev.lsaSize, s.hidden} &&
                      weight.device().is_cuda() && weight.dtype() == DType::kF32 &&
                      weight.numel() == s.hidden;
  WEFT_CHECK(shapes)
      << "fused residual norm: residual " << residual.str() << ", weight " << weight.str();
  fused_residual_norm_kernel<<<kBlocks, kThreads, 0, kernels::cuda::compute_stream()>>>(
      s.dev, s.partial_win, s.normed_win, rows, s.hidden, residual.data<float>(),
      weight.data<float>(), eps);
  WEFT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace weft::comm
