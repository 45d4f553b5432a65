// Private pieces of the sequence-parallel attention cores (parallel/sp_attention.h).
//
// Shapes used throughout: q/o/dout [B, c, H, d] (c local tokens); K and V travel together as
// one tensor kv [2B, c, Hkv, d] (rows 0..B-1 are K, B..2B-1 are V), so one message or one
// collective moves both. lse is kept per run: [B, c*H] f32 where the run starting at local
// index i holds its [H, len] block at offset i*H (attention_forward's lse layout for that run).
//
// One class serves ring, ulysses and usp: Ulysses inside groups of `a` consecutive ranks (a
// head exchange; a = 1: none), then the ring across the P/a groups (P/a = 1: one local block).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "parallel/sp_attention.h"
#include "parallel/sp_layout.h"
#include "runtime/core/check.h"
#include "runtime/core/tensor.h"

namespace weft::parallel::sp_detail {

using Run = SpLayout::Run;

// ---- token order --------------------------------------------------------------------------

// The tokens of `members` consecutive ranks starting at `first`, in position order.
struct TokenOrder {
  std::vector<Run> runs;                   // runs of the sorted positions (local = sorted index)
  std::vector<std::vector<int64_t>> slot;  // slot[m][t]: sorted index of member m's token t
};
TokenOrder token_order(const SpLayout& layout, int64_t seq_len, int first, int members);

// ---- row copies ---------------------------------------------------------------------------

// A list of block moves between two tensors seen as rows of `row` elements ([-1, row]).
class RowMap {
 public:
  explicit RowMap(int64_t row) : row_(row) {}
  // dst rows [dst, dst+rows) <- src rows [src, src+rows); joins the previous block when both
  // continue it.
  void add(int64_t dst, int64_t src, int64_t rows);
  // Writes the mapped rows of dst from src.
  void copy(const Tensor& src, Tensor& dst) const;
  // The transpose: to[src rows] += from[dst rows] (rows mapped twice sum).
  void add_transposed(const Tensor& from, Tensor& to) const;

 private:
  struct Block {
    int64_t dst, src, rows;
  };
  int64_t row_;
  std::vector<Block> blocks_;
};

// ---- views --------------------------------------------------------------------------------

// x [B', T, h, d]: tokens [begin, begin+len) of batch row b as a [1, len, h, d] view.
Tensor token_view(const Tensor& x, int64_t b, int64_t begin, int64_t len);
// lse [B, c*H] (per-run layout above): the [1, H, len] block of `run` in batch row b.
Tensor lse_view(const Tensor& lse, int64_t heads, int64_t b, const Run& run);
// kv [2B, c, Hkv, d] from k, v [B, c, Hkv, d]; and back (write_output into k and v).
Tensor pack_kv(const Tensor& k, const Tensor& v);
void unpack_kv(const Tensor& kv, Tensor& k, Tensor& v);

// The algorithm's own saved state; another algorithm's is a bug.
template <typename T, typename Base>
T& saved_as(Base& saved) {
  auto* own = dynamic_cast<T*>(&saved);
  WEFT_CHECK(own != nullptr) << "backward() given another algorithm's saved state";
  return *own;
}

// ---- block attention ----------------------------------------------------------------------

// The local queries (runs q_runs of q) against one block of keys kv [2B, Tk, Hkv, d] whose
// tokens form k_runs; merged by log-sum-exp into (o, lse). Pairs of runs with every key after
// every query are skipped, and keys past a run's last query are not read.
void attend_block(const Tensor& q, const std::vector<Run>& q_runs, const Tensor& kv,
                  const std::vector<Run>& k_runs, float scale, Tensor& o, Tensor& lse);
// Backward of the same block with the final (o, lse): adds into dq [B, c, H, d] and
// dkv [2B, Tk, Hkv, d].
void attend_block_backward(const Tensor& q, const std::vector<Run>& q_runs, const Tensor& o,
                           const Tensor& lse, const Tensor& dout, const Tensor& kv,
                           const std::vector<Run>& k_runs, float scale, Tensor& dq, Tensor& dkv);

// WEFT_CHECKs q [B, c, H, d] and k, v [B, c, Hkv, d] against the options.
void check_qkv(const SpAttentionOptions& options, const Tensor& q, const Tensor& k,
               const Tensor& v);
// Writes `value` into `out`, allocating it when the caller passed an undefined tensor.
void write_output(Tensor& out, const Tensor& value);

// o = 0 [B, c, H, d] and lse = -inf [B, c*H], shaped for q.
void init_output(const Tensor& q, Tensor& o, Tensor& lse);

// ---- ring ---------------------------------------------------------------------------------

// Ring attention over `ring` (nullptr: one rank): K/V blocks go to rank+1 and come from rank-1,
// the next block's transfer posted before computing on the one in hand.
struct RingState {
  Tensor q, kv, o, lse;                // q [B,c,H,d], kv [2B,c,Hkv,d], o, lse
  std::vector<std::vector<Run>> runs;  // runs[j]: the token runs of ring rank j
};
// Fills s.o and s.lse from s.q, s.kv and s.runs.
void ring_forward(comm::Communicator* ring, float scale, RingState& s);
// Writes dq [B,c,H,d] and dkv [2B,c,Hkv,d] (the accumulators come home after P hops).
void ring_backward(comm::Communicator* ring, float scale, const RingState& s, const Tensor& dout,
                   Tensor& dq, Tensor& dkv);

// ---- constructors (the options are validated by make_sp_attention) --------------------------

// ring (ulysses = 1), ulysses (ulysses = P) and usp.
std::unique_ptr<SequenceParallelAttention> make_ulysses_ring(comm::Communicator& group,
                                                             const SpAttentionOptions& options,
                                                             int ulysses);
std::unique_ptr<SequenceParallelAttention> make_allgather(comm::Communicator& group,
                                                          const SpAttentionOptions& options);

}  // namespace weft::parallel::sp_detail
