// A communicator over one group with two backends: calls on GPU tensors go to `device` (NCCL),
// calls on host tensors to `host` (MPI). What a GPU run's groups are: the model's activations,
// gradients and KV blocks live on the GPU, while the control values the code exchanges (a loss
// to print, a flag every rank must agree on, a routing count) stay on the host.
//
// Both backends span the same ranks in the same order; every rank issues the same calls on the
// same devices, so each backend sees its calls in one order on every rank. The stats are the sum
// of the two; split() splits both.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace weft::comm {

std::unique_ptr<Communicator> make_hybrid_communicator(std::unique_ptr<Communicator> host,
                                                       std::unique_ptr<Communicator> device);

// The communicator a command on `device` runs its model over: for a CUDA device, a hybrid of a
// copy of `host` (an MPI communicator) and an NCCL communicator over the same ranks on that
// device (collective over `host`); null for the CPU and the emulated GPU, which use `host`.
std::unique_ptr<Communicator> device_communicator(Communicator& host, Device device);

}  // namespace weft::comm
