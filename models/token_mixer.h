// The sequence-mixing half of a decoder block: softmax attention or linear attention.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "models/param.h"
#include "models/saved_activations.h"
#include "models/token_batch.h"

namespace weft::models {

// One layer's decoding state (KV cache or carried linear-attention state).
class MixerCache {
 public:
  virtual ~MixerCache() = default;
  // A paged cache's k and v [num_blocks, block_size, Hkv_local, d] (shared storage), for KV
  // transfer between serving instances; empty for other caches.
  [[nodiscard]] virtual std::pair<Tensor, Tensor> paged_kv() const { return {}; }
};

// What a mixer keeps for one layer while a sequence runs chunk by chunk of positions (StreamBP,
// SeCO): the keys and values of the positions so far, or the carried linear-attention states,
// and the gradients later chunks leave on them.
class MixerStream {
 public:
  virtual ~MixerStream() = default;
  // SpaCO: the factor on the gradient that later chunks left on a chunk's keys and values (or
  // its outgoing state), applied as the chunk's backward starts (1: exact).
  float handover_scale = 1.0f;
};

class TokenMixer {
 public:
  virtual ~TokenMixer() = default;

  // x [N, D] (normed hidden states of `batch`) -> [N, D].
  // cache != nullptr: incremental decoding; the new tokens see the cached ones (positions from
  // batch.offset) and are added to the cache. saved != nullptr: keep what backward() needs.
  [[nodiscard]] virtual Tensor forward(const TokenBatch& batch, const Tensor& x, MixerCache* cache,
                                       SavedPtr* saved) const = 0;
  // dy [N, D] -> dx [N, D]; adds into the parameter gradients.
  [[nodiscard]] virtual Tensor backward(LayerSaved& saved, const Tensor& dy) = 0;

  // Chunk-wise runs (docs/algorithms.md "StreamBP", "SeCO and SpaCO"), whole sequences only.
  // stream_begin: a stream for `batch` cut into chunks of `chunk` positions. stream_prefill: fill
  // it from the normed input of every position x [N, D] at once (StreamBP has it). stream_forward:
  // the output [B*(e-a), D] of the chunk [a, e) from its rows x [B*(e-a), D], filling the stream
  // with the chunk's keys and values (or state) unless it holds them; saved: keep what
  // stream_backward needs. stream_backward: chunks from the last to the first, each right after
  // its forward; dy [B*(e-a), D] -> the chunk's dx, complete because every later chunk has left
  // its gradient on the chunk's keys and values; adds into the parameter gradients.
  // stream_skip (SpaCO): a chunk whose backward does not run.
  [[nodiscard]] virtual std::unique_ptr<MixerStream> stream_begin(const TokenBatch& batch,
                                                                  int64_t chunk) const = 0;
  virtual void stream_prefill(MixerStream& stream, const Tensor& x) const = 0;
  [[nodiscard]] virtual Tensor stream_forward(MixerStream& stream, int64_t a, int64_t e,
                                              const Tensor& x, SavedPtr* saved) const = 0;
  [[nodiscard]] virtual Tensor stream_backward(MixerStream& stream, LayerSaved& saved,
                                               const Tensor& dy) = 0;
  virtual void stream_skip(MixerStream& stream, int64_t a, int64_t e) const = 0;

  [[nodiscard]] virtual std::unique_ptr<MixerCache> new_cache(int64_t batch,
                                                              int64_t max_len) const = 0;
  // A layer's share of the paged KV cache (serving): null when the mixer cannot serve from one
  // (linear attention keeps a per-request state, not per-token K/V).
  [[nodiscard]] virtual std::unique_ptr<MixerCache> new_paged_cache(int64_t num_blocks,
                                                                    int64_t block_size) const {
    return nullptr;
  }
  // Bytes of new_paged_cache per block (0 when unsupported).
  [[nodiscard]] virtual int64_t paged_cache_block_bytes(int64_t block_size) const { return 0; }
  virtual void collect_params(std::vector<Param*>& out) = 0;
};

}  // namespace weft::models
