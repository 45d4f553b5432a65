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
  // The length of the sequences these tokens belong to, for dynamic RoPE (models/
  // rotary_embedding.h): 1 + the largest position of the whole forward. 0: offset + len; set
  // where a call holds part of its sequences (sequence parallelism, StreamBP and SeCO chunks).
  int64_t seq_len = 0;
  // A serving step: [T] i64, each token's request length in the step, request_lengths(paged).
  Tensor seq_lens{};

  [[nodiscard]] int64_t tokens() const { return batch * len; }  // N = B * T
  [[nodiscard]] int64_t rope_len() const { return seq_len > 0 ? seq_len : offset + len; }

  static TokenBatch make(int64_t batch, int64_t len, int64_t offset);
};

// [N] i64: for each token of a serving step, 1 + the largest position its request (`seq`) has in
// the step, the length transformers' dynamic RoPE would scale that request's forward for.
[[nodiscard]] Tensor request_lengths(const PagedBatch& paged);

}  // namespace weft::models
