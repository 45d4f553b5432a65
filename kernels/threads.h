// Threads the CPU kernels may use (OpenBLAS's pool). One process per rank: with several ranks on
// a node each should use a share of the cores, not all of them.
#pragma once

namespace weft::kernels {

void set_cpu_threads(int threads);
[[nodiscard]] int cpu_threads();

// The default for a process that is one of `local_ranks` on this node: OPENBLAS_NUM_THREADS or
// WEFT_NUM_THREADS when set, else the cores divided among the local ranks (at least 1).
[[nodiscard]] int default_cpu_threads(int local_ranks);

}  // namespace weft::kernels
