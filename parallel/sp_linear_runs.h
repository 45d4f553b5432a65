// Private to sp_linear_attention.cc, sp_lasp2.cc and sp_zeco.cc: the pieces shared by the
// sequence-parallel linear attention algorithms (docs/algorithms.md "Linear attention in chunks").
//
// A rank's tokens form runs of consecutive positions (SpLayout::runs). Per run with local
// positions j = 0..L-1 and per query head h (decay g, scale s):
//   local state  M     = sum_j g^(L-1-j) k_j^T v_j              [B, H, d, d]
//   inter        o_j  += s g^(j+1) q_j S_in
//   query state  N     = s sum_j g^(j+1) q_j^T dO_j             [B, H, d, d]
//   state grads  dk_j += g^(L-1-j) v_j dS_out^T,  dv_j += g^(L-1-j) k_j dS_out
// and the runs chain by S_out = g^L S_in + M (forward) and dS_in = g^L dS_out + N (backward).
// The algorithms differ only in how the carried states S_in (dS_out) of every run are formed
// from all runs' M (N): a StateExchange.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "parallel/sp_layout.h"
#include "parallel/sp_linear_attention.h"
#include "runtime/core/tensor.h"

namespace weft::parallel::sp_linear {

// Where this rank's runs sit in the whole sequence, for one forward/backward.
struct RunPlan {
  SpLayout layout;
  int rank = 0;
  int64_t seq_len = 0;
  std::vector<SpLayout::Run> runs;  // this rank's, in local order
  std::vector<float> gamma;         // [H] decays of the local query heads
  Shape state_shape;                // [B, H, d, d]
};

// An exchange in flight; finish() waits for it and completes the output states.
class PendingStates {
 public:
  virtual ~PendingStates() = default;
  virtual void finish() = 0;
};

class StateExchange {
 public:
  virtual ~StateExchange() = default;
  // m: each local run's M. Writes s_in (one zeroed [B,H,d,d] per run on entry): the state
  // carried into each run, S_in = sum over earlier runs p of g^(positions between) M_p.
  // m and s_in must live until finish().
  [[nodiscard]] virtual std::unique_ptr<PendingStates> start_forward(const RunPlan& plan,
                                                                     const std::vector<Tensor>& m,
                                                                     std::vector<Tensor>& s_in) = 0;
  // n: each local run's N. Writes ds_out (zeroed on entry): the gradient flowing into each run's
  // S_out, dS_out = sum over later runs p of g^(positions between) N_p.
  [[nodiscard]] virtual std::unique_ptr<PendingStates> start_backward(
      const RunPlan& plan, const std::vector<Tensor>& n, std::vector<Tensor>& ds_out) = 0;
};

// LASP-2: any layout (one all-gather per pass).
std::unique_ptr<StateExchange> make_lasp2_exchange(comm::Communicator& group);
// ZeCO: the contiguous layout and the zigzag over ranks; other layouts are refused.
absl::StatusOr<std::unique_ptr<StateExchange>> make_zeco_exchange(comm::Communicator& group,
                                                                  const SpLinearOptions& options);

// A tensor shaped like a state [B, H, d, d] holding g_h^len in every entry of head h: the decay
// of a run of `len` positions, for the chaining S = g^len S + M as kernels::mul_add_(S, decay, M).
Tensor state_decay(const Shape& state_shape, const std::vector<float>& gamma, int64_t len,
                   Device device);

}  // namespace weft::parallel::sp_linear
