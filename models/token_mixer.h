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

// What a mixer keeps for one layer while StreamBP's chunks run (the keys and values of every
// position, or the carried linear-attention states) and the gradients the chunks gather into.
class MixerStream {
 public:
  virtual ~MixerStream() = default;
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

  // StreamBP's chunk-wise layer backward (docs/algorithms.md "StreamBP"), whole sequences only.
  // stream_begin: x [N, D] the layer's normed input of `batch`, cut into chunks of `chunk`
  // positions. stream_forward: the output rows [B*(e-a), D] of positions [a, e) of every sequence
  // (a chunk boundary), keeping in `saved` what stream_backward needs. The chunks run from the
  // last to the first, each chunk's backward right after its forward; stream_backward adds into
  // the parameter gradients and the stream. stream_end: dx [N, D] of the whole layer.
  [[nodiscard]] virtual std::unique_ptr<MixerStream> stream_begin(const TokenBatch& batch,
                                                                  const Tensor& x,
                                                                  int64_t chunk) const = 0;
  [[nodiscard]] virtual Tensor stream_forward(MixerStream& stream, int64_t a, int64_t e,
                                              SavedPtr* saved) const = 0;
  virtual void stream_backward(MixerStream& stream, LayerSaved& saved, const Tensor& dy) = 0;
  [[nodiscard]] virtual Tensor stream_end(MixerStream& stream) = 0;

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
