// Sequence-parallel decayed linear attention (docs/algorithms.md "Linear attention in chunks",
// "LASP-2", "ZeCO and All-Scan"). Per query head h with decay g_h and scale s,
//   o_t = s * sum_{u<=t} g_h^(t-u) (q_t . k_u) v_u
// over the whole sequence; each rank holds its tokens (an SpLayout) and gets exactly its rows of
// the one-rank result, forward and backward. A rank's tokens form runs of consecutive
// positions; each run is computed by the chunked kernel (kernels/ops.h
// linear_attention_forward/backward) from the state carried into it:
//
//   lasp2  one all-gather of every run's local state M (B*H*d*d each, independent of T); each
//          rank forms its runs' carried states by the decayed prefix. Backward: one all-gather
//          of the N states and the decayed suffix. Any layout.
//   zeco   the All-Scan collective (comm/communicator.h all_scan): one state sent per rank per
//          pass, pipelined over blocks; backward by the reverse All-Scan of dS. The contiguous
//          layout needs one pass; the zigzag over ranks two (forward over the first chunks,
//          then reverse over the second chunks, the last rank bridging). Other layouts are
//          refused.
//   auto   owns a lasp2 and (when the layout allows) a zeco core and runs, per forward, the one a
//          cost model of compute and bytes predicts fastest for that call's shape
//          (parallel/sp_auto.h, parallel/sp_cost_model.h).
// The intra-run work overlaps the collective: the local state M is computed first, the
// collective started, then the intra-run output computed while it runs.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "parallel/sp_layout.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

enum class SpLinearAlgo { kLasp2, kZeco, kAuto };

absl::StatusOr<SpLinearAlgo> parse_sp_linear(const std::string& name);  // "lasp2", "zeco", "auto"
const char* sp_linear_name(SpLinearAlgo algo);

class SpLinearSaved {
 public:
  virtual ~SpLinearSaved() = default;
};

class SequenceParallelLinearAttention {
 public:
  virtual ~SequenceParallelLinearAttention() = default;

  // q [B, c, H, d], k/v [B, c, Hkv, d]; gamma: the H local heads' decays. Returns o [B,c,H,d].
  [[nodiscard]] virtual Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const std::vector<float>& gamma, float scale,
                                       std::unique_ptr<SpLinearSaved>* saved) = 0;
  // dout [B, c, H, d] -> dq, dk, dv (written; shaped like q, k, v).
  virtual void backward(SpLinearSaved& saved, const Tensor& dout, Tensor& dq, Tensor& dk,
                        Tensor& dv) = 0;
};

struct SpLinearOptions {
  SpLinearAlgo algo = SpLinearAlgo::kZeco;
  SpLayout layout;      // layout.ranks == group.size()
  int scan_blocks = 4;  // zeco: pieces the All-Scan is pipelined in
};

// Collective over `group` (auto measures the group's cost parameters, calibrate_sp_cost).
// Errors: a layout the algorithm cannot use (named), a malformed WEFT_SP_COST. The group must
// outlive the result.
absl::StatusOr<std::unique_ptr<SequenceParallelLinearAttention>> make_sp_linear_attention(
    comm::Communicator& group, const SpLinearOptions& options);

}  // namespace weft::parallel
