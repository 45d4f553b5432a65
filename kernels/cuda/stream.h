// The CUDA stream every weft kernel runs on. Communicators order their own streams against it
// (comm/nccl records an event here before a collective and makes this stream wait after one).
#pragma once

#include <cuda_runtime.h>

namespace weft::kernels::cuda {

// The default stream of the calling thread (stream 0, the same one Tensor's cudaMemcpy and
// cudaMemset use), so kernels, copies and cuBLASLt calls run in issue order.
inline cudaStream_t compute_stream() { return static_cast<cudaStream_t>(0); }

}  // namespace weft::kernels::cuda
