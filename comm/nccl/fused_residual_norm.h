// TokenWeave's fused communication step for Hopper GPUs on one NVLink node (docs/serving.md
// "TokenWeave", "The fused Hopper kernel"): one kernel does what the unfused path does with a
// reduce-scatter, a residual add, an RMSNorm and an all-gather:
//
//   h[i]   = residual[i] + sum_r partial_r[i]        for this rank's rows i
//   out[i] = h[i] * rsqrt(mean_j h[i,j]^2 + eps) * w  written to every rank's `out`
//
// through NCCL 2.28's device API: the partial outputs live in a symmetric window; NVLink SHARP
// (multimem) sums them in the switch as the kernel loads them (multimem.ld_reduce), and a
// multimem store writes each normed row to every rank at once (the all-gather). An LSA barrier
// before (every rank's partial is written) and after (every rank's rows have arrived) replaces the
// collectives' own synchronisation. Built in CUDA builds; needs sm_90 and NVLS (H100/H200 SXM
// nodes), which create() checks, returning null elsewhere so callers keep the unfused path.
#pragma once

#include <nccl.h>

#include <cstdint>
#include <memory>

#include "runtime/core/tensor.h"

namespace weft::comm {

class FusedResidualNorm {
 public:
  // Collective over `comm` (ranks of one node): a symmetric window of max_rows x hidden f32 for
  // the partial outputs and one for the normed rows, and a device communicator with multimem and
  // one LSA barrier per block. Null when this GPU or node cannot (no multimem support).
  static std::unique_ptr<FusedResidualNorm> create(ncclComm_t comm, int64_t max_rows,
                                                   int64_t hidden);
  ~FusedResidualNorm();
  FusedResidualNorm(const FusedResidualNorm&) = delete;
  FusedResidualNorm& operator=(const FusedResidualNorm&) = delete;

  // Where this rank writes its partial output, [rows, hidden] f32 (rows <= max_rows): a view of
  // the symmetric window.
  [[nodiscard]] Tensor partial(int64_t rows) const;
  // The gathered normed rows after run(), [rows, hidden] f32 (a view of the other window).
  [[nodiscard]] Tensor normed(int64_t rows) const;

  // rows (a multiple of the group size P): this rank owns rows [rank * rows / P, ...). residual
  // [rows / P, hidden] f32 is updated in place to h; weight [hidden] f32. On the compute stream.
  void run(int64_t rows, Tensor& residual, const Tensor& weight, float eps);

 private:
  FusedResidualNorm() = default;
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace weft::comm
