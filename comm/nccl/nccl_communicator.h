// The NCCL backend of Communicator, for CUDA tensors (f32, bf16, f16, i32, i64, u8). Built only
// in CUDA builds.
//
// Streams: every call runs on the communicator's own comm stream, which first waits (through an
// event) for the work already issued on the compute stream (kernels/cuda/stream.h), so the
// inputs are ready. The returned Work holds an event recorded on the comm stream after the call:
//   Work::wait() makes the compute stream wait for that event and returns without blocking the
//     host (barrier's Work is the exception: it blocks the host too). After wait(), everything
//     issued on the compute stream (kernels, Tensor copies to the host) sees the results, and
//     the buffers may be reused there.
//   Work::done() reports, without blocking, whether the call has finished on the device.
// Point-to-point calls have no tags in NCCL: messages between two ranks match in issue order
// (the `tag` argument is ignored).
#pragma once

#include <mpi.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace weft::comm {

// Collective over `mpi_comm`: rank 0 makes the NCCL unique id and broadcasts it over MPI, then
// every rank joins the NCCL communicator on `cuda_device`. The MPI communicator is duplicated
// (the caller keeps its own and must not use it from another thread during this call); split()
// splits the duplicate.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm mpi_comm, int cuda_device,
                                                     std::string name);

// The NCCL communicator behind `comm` (one make_nccl_communicator made, or split), for code that
// drives NCCL itself (comm/nccl/fused_residual_norm.h); null for any other backend.
ncclComm_t nccl_handle(Communicator& comm);

}  // namespace weft::comm
