// Sequence-parallel softmax attention cores (docs/algorithms.md "Ring attention", "Ulysses",
// "LASP-2" for the all-gather variant). Each rank holds the q/k/v of its own tokens (positions
// given by an SpLayout, RoPE already applied) and gets exactly its tokens' rows of the one-rank
// causal attention over the whole sequence, forward and backward.
//
//   ring       K/V blocks travel the ring (send to r+1, receive from r-1) with asynchronous
//              send/recv overlapped with the block in hand; partial results merge by
//              log-sum-exp; the backward recomputes per block with the final (o, lse) and sends
//              the dK/dV accumulators home with their block. Balanced under the zigzag layout;
//              correct under any layout.
//   ulysses    all-to-all from [c tokens, H heads] to [T tokens, H/P heads], local attention,
//              the reverse all-to-all. Uneven head counts allowed (heads not divisible by P);
//              with GQA and P > Hkv, KV heads replicated and their gradients summed.
//   usp        Ulysses inside groups of `ulysses` consecutive sp ranks, ring across the groups.
//   allgather  LASP-2H style: all-gather K and V over the group and attend with the causal
//              offsets; the backward reduce-scatters dK and dV.
//   auto       owns a ring, a Ulysses (when heads >= P) and an allgather core over one layout and
//              runs, per forward, the one a cost model of compute and bytes predicts fastest for
//              that call's shape (parallel/sp_auto.h, parallel/sp_cost_model.h).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "parallel/sp_layout.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

enum class SpAttnAlgo { kRing, kUlysses, kUsp, kAllGather, kAuto };

// "ring", "ulysses", "usp", "allgather", "auto" <-> SpAttnAlgo. Unknown names are an error naming
// the value and the choices.
absl::StatusOr<SpAttnAlgo> parse_sp_attn(const std::string& name);
const char* sp_attn_name(SpAttnAlgo algo);

// The layout an algorithm wants for sp = ranks: ring (and auto, whose cores all accept it) zigzag
// over the ranks, usp zigzag over the ring level (ranks / ulysses groups), ulysses and allgather
// contiguous.
SpLayout preferred_layout(SpAttnAlgo algo, int ranks, int ulysses);

// What the forward keeps for the backward (the algorithm's own layout of o and lse).
class SpAttentionSaved {
 public:
  virtual ~SpAttentionSaved() = default;
};

class SequenceParallelAttention {
 public:
  virtual ~SequenceParallelAttention() = default;

  // q [B, c, H, d], k/v [B, c, Hkv, d] of this rank's c tokens (seq_len = c * P). Returns
  // o [B, c, H, d]. saved != nullptr: keep what backward() needs.
  [[nodiscard]] virtual Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       std::unique_ptr<SpAttentionSaved>* saved) = 0;
  // dout [B, c, H, d] -> dq, dk, dv (written; shaped like q, k, v).
  virtual void backward(SpAttentionSaved& saved, const Tensor& dout, Tensor& dq, Tensor& dk,
                        Tensor& dv) = 0;
};

struct SpAttentionOptions {
  SpAttnAlgo algo = SpAttnAlgo::kRing;
  SpLayout layout;       // how the sequence is split (layout.ranks == group.size())
  int ulysses = 1;       // usp: Ulysses group size (divides the sp degree)
  float scale = 1;       // 1 / sqrt(d)
  int64_t heads = 0;     // H (this rank's query heads before any sp split, i.e. after tp)
  int64_t kv_heads = 0;  // Hkv
};

// Collective over `group` (usp splits it into its Ulysses and ring groups; auto measures the
// group's cost parameters, calibrate_sp_cost). Errors: a layout the algorithm cannot use (auto:
// ring's), a ulysses size not dividing the group, heads the algorithm cannot split, a malformed
// WEFT_SP_COST. The group must outlive the result.
absl::StatusOr<std::unique_ptr<SequenceParallelAttention>> make_sp_attention(
    comm::Communicator& group, const SpAttentionOptions& options);

}  // namespace weft::parallel
