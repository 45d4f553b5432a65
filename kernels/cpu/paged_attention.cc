// Attention over the paged KV cache (serving): each token of a flattened varlen step attends to
// its request's positions through the block table. One token and head at a time, positions in
// order, softmax in f32: a token's output is the same whatever else is in the batch.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "runtime/core/check.h"

namespace weft::kernels::cpu {

void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache,
                    Tensor& v_cache) {
  const int64_t n = k.dim(0);
  const int64_t row = k.dim(1) * k.dim(2);  // Hkv * d floats per token
  const int64_t num_slots = k_cache.dim(0) * k_cache.dim(1);
  const IndexReader slot(slots);
  for (int64_t i = 0; i < n; ++i) {
    WEFT_CHECK(slot[i] >= 0 && slot[i] < num_slots) << "slot " << slot[i] << " of " << num_slots;
    std::copy_n(k.data<float>() + i * row, row, k_cache.data<float>() + slot[i] * row);
    std::copy_n(v.data<float>() + i * row, row, v_cache.data<float>() + slot[i] * row);
  }
}

void paged_attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                             const Tensor& block_tables, const Tensor& seq, const Tensor& pos,
                             float scale, Tensor& o) {
  const int64_t n = q.dim(0), heads = q.dim(1), d = q.dim(2);
  const int64_t block_size = k_cache.dim(1), kv_heads = k_cache.dim(2);
  const int64_t max_blocks = block_tables.dim(1);
  const int64_t group = heads / kv_heads;
  const IndexReader table(block_tables), seq_of(seq), pos_of(pos);
  std::vector<float> scores;
  std::vector<const float*> keys, values;  // per position: its K/V row for KV head 0
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = seq_of[i], last = pos_of[i];
    WEFT_CHECK(r >= 0 && r < block_tables.dim(0) && last >= 0 && last / block_size < max_blocks)
        << "token " << i << ": request " << r << " position " << last << " is outside the tables";
    keys.resize(last + 1);
    values.resize(last + 1);
    for (int64_t t = 0; t <= last; ++t) {
      const int64_t block = table[r * max_blocks + t / block_size];
      WEFT_CHECK(block >= 0 && block < k_cache.dim(0)) << "request " << r << " block " << block;
      const int64_t at = (block * block_size + t % block_size) * kv_heads * d;
      keys[t] = k_cache.data<float>() + at;
      values[t] = v_cache.data<float>() + at;
    }
    scores.resize(last + 1);
    for (int64_t h = 0; h < heads; ++h) {
      const float* qh = q.data<float>() + (i * heads + h) * d;
      const int64_t kv = (h / group) * d;
      float max_score = kNegInf;
      for (int64_t t = 0; t <= last; ++t) {
        float dot = 0.0f;
        for (int64_t c = 0; c < d; ++c) dot += qh[c] * keys[t][kv + c];
        scores[t] = dot * scale;
        max_score = std::max(max_score, scores[t]);
      }
      float total = 0.0f;
      for (int64_t t = 0; t <= last; ++t) {
        scores[t] = std::exp(scores[t] - max_score);
        total += scores[t];
      }
      float* oh = o.data<float>() + (i * heads + h) * d;
      std::fill(oh, oh + d, 0.0f);
      for (int64_t t = 0; t <= last; ++t) {
        const float w = scores[t] / total;
        for (int64_t c = 0; c < d; ++c) oh[c] += w * values[t][kv + c];
      }
    }
  }
}

}  // namespace weft::kernels::cpu
