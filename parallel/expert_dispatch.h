// The token dispatcher of expert parallelism (docs/algorithms.md "Expert parallelism"): moves
// the rows routed to each expert to the ranks that compute it, and the results back.
//
//   rank's rows [S, D], sorted by (destination ep rank, its local expert)
//     -- all_to_all_v over ep -->          [R, D] by (source rank, local expert)
//     -- regroup -->                       [R, D] by (local expert, source rank)
//     -- all-gather-v over etp -->         [R_etp, D] by (local expert, etp rank, source rank)
//   experts run on contiguous row blocks (each etp rank its block of the features), then the
//   way back: a reduce-scatter-v over etp sums the feature blocks' partial outputs, the regroup
//   is undone, and all_to_all_v returns every row to its sender, in the sender's order.
//
// The same plan carries the backward: dispatch() the output gradients, run the experts'
// backward, combine() the input gradients. Counts are exchanged once, when the plan is made.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::parallel {

class ExpertDispatch {
 public:
  ExpertDispatch() = default;
  // send_counts [ep * L]: rows this rank sends to ep rank d for that rank's local expert l, at
  // d * L + l (L local experts per ep rank). Collective over ep (count exchange) and etp.
  // ep / etp null: one rank.
  ExpertDispatch(comm::Communicator* ep, comm::Communicator* etp,
                 const std::vector<int64_t>& send_counts, int64_t local_experts);

  // x [S, D] in send order -> [rows(), D] grouped by local expert (expert_begin()).
  [[nodiscard]] Tensor dispatch(const Tensor& x) const;
  // y [rows(), D] grouped by local expert (this etp rank's partial sums when etp > 1) ->
  // [S, D] in send order, summed over etp.
  [[nodiscard]] Tensor combine(const Tensor& y) const;

  [[nodiscard]] int64_t rows() const { return static_cast<int64_t>(final_from_.size()); }
  // Local expert l owns grouped rows [expert_begin()[l], expert_begin()[l + 1]).
  [[nodiscard]] const std::vector<int64_t>& expert_begin() const { return expert_begin_; }

 private:
  comm::Communicator* ep_ = nullptr;
  comm::Communicator* etp_ = nullptr;
  int64_t sent_ = 0;                   // S
  std::vector<int64_t> send_rows_;     // [ep] rows to each ep rank
  std::vector<int64_t> recv_rows_;     // [ep] rows from each ep rank
  std::vector<int64_t> etp_rows_;      // [etp] rows each etp rank contributes after regrouping
  std::vector<int64_t> final_from_;    // grouped row g comes from row final_from_[g] of the
                                       // etp-gathered buffer (source-major per etp rank)
  std::vector<int64_t> expert_begin_;  // [L + 1]
};

// out[g] = x[from[g]]: rows of x [n, ...] picked into [from.size(), ...].
[[nodiscard]] Tensor take_rows(const Tensor& x, const std::vector<int64_t>& from);
// The inverse: out [rows, ...] with out[from[g]] = y[g] (from: a permutation of out's rows).
[[nodiscard]] Tensor put_rows(const Tensor& y, const std::vector<int64_t>& from, int64_t rows);

// Rows of x [n, D] from every rank of `group`, concatenated in rank order (an all-gather with
// uneven row counts; rows[i] = rank i's n). Counted as all_to_all_v: (P-1) * n rows sent.
[[nodiscard]] Tensor all_gather_rows_v(comm::Communicator& group, const Tensor& x,
                                       const std::vector<int64_t>& rows);
// The inverse's reduction: x [sum(rows), D] holds a partial of every rank's rows (rank i's at
// its block); returns this rank's block [rows[rank], D] summed over the group.
[[nodiscard]] Tensor reduce_scatter_rows_v(comm::Communicator& group, const Tensor& x,
                                           const std::vector<int64_t>& rows);

}  // namespace weft::parallel
