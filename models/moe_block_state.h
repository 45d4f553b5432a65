// What an MoeBlock keeps between its routing, its forward and its backward: shared by
// models/moe_block.cc (routing, the plain and the expert-parallel dispatch) and
// models/moe_speculative.cc (the speculative dispatch). Private to those two files.
#pragma once

#include <cstdint>
#include <vector>

#include "models/moe_block.h"
#include "parallel/expert_dispatch.h"

namespace weft::models {

// The router's decisions for n rows.
struct MoeBlock::Routed {
  Tensor probs;            // [n, E] router softmax
  Tensor idx;              // [n, k] i32 chosen experts
  Tensor weights;          // [n, k] renormalised router weights
  std::vector<bool> keep;  // [n*k] within capacity (all true when dropless)
};

struct MoeBlock::Saved : LayerSaved {
  Tensor x;  // [n, D] the rows this rank routed
  Routed routed;
  std::vector<SwiGluMlp::Saved> experts;  // per expert (plain) or local expert (parallel)
  // Plain layout.
  ExpertRouting routing;
  Tensor y_sorted;  // [N*k, D] expert outputs, rows sorted by expert
  // Expert parallel.
  std::vector<int64_t> send_row;  // [n*k] row of each choice in the send buffer, -1 if dropped
  parallel::ExpertDispatch dispatch;
  Tensor y_sent;                  // [S, D] the chosen experts' outputs, in send order
  std::vector<int64_t> tp_rows;   // rows each tp rank took (empty: rows not shared over tp)
  std::vector<int64_t> tp_order;  // the rows of tp rank 0, then 1, ...: positions in x
  std::vector<int64_t> own;       // this rank's rows (positions in x)
  // Speculative dispatch: one send row per (token, destination ep rank).
  std::vector<int64_t> send_token;  // [S] token of each send row
  std::vector<int64_t> send_rows;   // [ep] send rows per destination
  std::vector<int64_t> recv_rows;   // [ep] received rows per source
  std::vector<int64_t> choice_row;  // [C] received row of each local choice (slot-major)
  std::vector<int64_t> choice_j;    // [C] its choice index j (0..k-1)
  std::vector<float> choice_w;      // [C] its router weight
  std::vector<int64_t> slot_begin;  // [L + 1] local expert l owns choices [begin, end)
  Tensor y_choice;                  // [C, D] each local choice's expert output
  std::vector<float> aux_dprob;     // [E] d(scaled aux)/d probs of each routed row (or empty)
};

}  // namespace weft::models
