// One serving step's tokens for the paged KV cache (docs/serving.md): the tokens of several
// requests flattened with no padding — decodes and prefill chunks alike — and the block tables
// through which attention reads and writes each request's cached keys and values.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::models {

// Shift parallelism's sequence-parallel mode (docs/serving.md "Shift parallelism"): the step's
// rows are split over `group`, rank i holding rows [begin[i], begin[i+1]), and each attention
// layer runs Ulysses-style: a rank's q, k, v go head by head to the rank whose KV-cache shard
// holds those heads (the tensor-parallel layout), which attends for every row of the step.
struct UlyssesSplit {
  comm::Communicator* group = nullptr;
  std::vector<int64_t> begin;  // [P + 1]
};

struct PagedBatch {
  Tensor tokens;        // [N] i64
  Tensor positions;     // [N] i64: each token's position in its request (RoPE, causal mask)
  Tensor seq;           // [N] i64: each token's row of block_tables
  Tensor slots;         // [N] i64: block * block_size + offset, where its K/V are written
  Tensor block_tables;  // [R, max_blocks] i64 (unused entries 0)
  // Rows of the step whose next-token logits are wanted (the last token of a request's chunk
  // when that chunk reaches the end of what the request has so far), in the order returned.
  std::vector<int64_t> sample_rows;
  // Set in shift parallelism's sequence-parallel mode (null: every rank runs every row).
  const UlyssesSplit* ulysses = nullptr;

  [[nodiscard]] int64_t size() const { return tokens.defined() ? tokens.numel() : 0; }
  // The same step with its tensors on `device` (the engine builds steps on the host; the
  // attention kernels read them where the KV cache is).
  [[nodiscard]] PagedBatch on(Device device) const {
    PagedBatch b = *this;
    for (Tensor* t : {&b.tokens, &b.positions, &b.seq, &b.slots, &b.block_tables}) {
      if (t->defined()) *t = t->on(device);
    }
    return b;
  }
};

// The model's paged KV cache: per softmax-attention layer, k and v [num_blocks, block_size,
// Hkv_local, d] (Hkv_local: this rank's KV heads under tensor parallelism).
class PagedKvCache {
 public:
  virtual ~PagedKvCache() = default;
};

}  // namespace weft::models
