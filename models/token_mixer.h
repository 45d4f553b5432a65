// The sequence-mixing half of a decoder block: softmax attention or linear attention.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/param.h"
#include "models/saved_activations.h"
#include "models/token_batch.h"

namespace weft::models {

// One layer's decoding state (KV cache or carried linear-attention state).
class MixerCache {
 public:
  virtual ~MixerCache() = default;
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
