// What every layer needs to know about the tokens of one call: B sequences of `len` new tokens
// each, starting at absolute position `offset` (0 for training; the cached length when decoding).
#pragma once

#include <cstdint>

#include "models/paged_batch.h"
#include "runtime/core/tensor.h"

namespace weft::models {

struct TokenBatch {
  int64_t batch = 0;   // B
  int64_t len = 0;     // T, new tokens per sequence in this call
  int64_t offset = 0;  // absolute position of the first new token
  Tensor positions;    // [T] i64: offset, offset + 1, ... (RoPE positions)
  // A serving step (batch 1, len N): attention reads and writes the paged cache through these
  // block tables, and positions are each token's own (not offset + t). Null otherwise.
  const PagedBatch* paged = nullptr;

  [[nodiscard]] int64_t tokens() const { return batch * len; }  // N = B * T

  static TokenBatch make(int64_t batch, int64_t len, int64_t offset);
};

}  // namespace weft::models
