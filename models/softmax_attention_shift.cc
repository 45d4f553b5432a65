// Paged attention in shift parallelism's sequence-parallel mode (docs/serving.md "Shift
// parallelism"). This model holds every head's weights; the step's rows are split over the
// group; the KV cache is the tensor-parallel layout's, rank j holding KV heads
// [j*Hkv/P, (j+1)*Hkv/P) (and query heads [j*H/P, (j+1)*H/P) attend to them). Ulysses: each rank
// sends rank j the q, k, v of heads j of its rows; rank j writes the step's keys and values of
// its heads into its cache shard and attends for every row of the step; a second all-to-all
// returns each rank its rows with every head. The cache is the one tensor-parallel steps use,
// so steps of either mode read what the other wrote.
#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "models/softmax_attention.h"

namespace weft::models {

void SoftmaxAttention::attend_paged_ulysses(const PagedBatch& paged, const QkvHeads& qkv,
                                            Tensor& k_cache, Tensor& v_cache, Tensor& o) const {
  comm::Communicator& group = *paged.ulysses->group;
  const std::vector<int64_t>& begin = paged.ulysses->begin;
  const int p = group.size(), rank = group.rank();
  const int64_t d = proj_.head_dim(), hq = proj_.heads() / p, hk = proj_.kv_heads() / p;
  const int64_t n = paged.size(), local = begin[rank + 1] - begin[rank];
  WEFT_CHECK(proj_.heads() % p == 0 && proj_.kv_heads() % p == 0 && qkv.q.dim(1) == local &&
             k_cache.dim(2) == hk)
      << "Ulysses over " << p << " ranks: " << proj_.heads() << " heads, " << proj_.kv_heads()
      << " KV heads, a cache of " << k_cache.dim(2);
  // Rows to rank j: [local, hq*d | hk*d | hk*d] of heads j.
  const int64_t qw = hq * d, kw = hk * d, width = qw + 2 * kw;
  Tensor send = Tensor::empty({p * local, width});
  const float* q = qkv.q.data<float>();
  const float* k = qkv.k.data<float>();
  const float* v = qkv.v.data<float>();
  float* out = send.data<float>();
  for (int j = 0; j < p; ++j) {
    for (int64_t t = 0; t < local; ++t) {
      float* row = out + (j * local + t) * width;
      std::memcpy(row, q + (t * p + j) * qw, qw * sizeof(float));
      std::memcpy(row + qw, k + (t * p + j) * kw, kw * sizeof(float));
      std::memcpy(row + qw + kw, v + (t * p + j) * kw, kw * sizeof(float));
    }
  }
  std::vector<int64_t> counts(p), mine(p, local);
  for (int i = 0; i < p; ++i) counts[i] = begin[i + 1] - begin[i];
  Tensor recv = Tensor::empty({n, width});  // every row of the step, this rank's heads
  group.all_to_all_v(send, mine, recv, counts);
  Tensor q_heads = Tensor::empty({n, hq, d});
  Tensor k_heads = Tensor::empty({n, hk, d});
  Tensor v_heads = Tensor::empty({n, hk, d});
  const float* in = recv.data<float>();
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(q_heads.data<float>() + t * qw, in + t * width, qw * sizeof(float));
    std::memcpy(k_heads.data<float>() + t * kw, in + t * width + qw, kw * sizeof(float));
    std::memcpy(v_heads.data<float>() + t * kw, in + t * width + qw + kw, kw * sizeof(float));
  }
  kernels::kv_cache_write(k_heads, v_heads, paged.slots, k_cache, v_cache);
  Tensor o_heads = Tensor::empty({n, hq, d});
  kernels::paged_attention_forward(q_heads, k_cache, v_cache, paged.block_tables, paged.seq,
                                   paged.positions, scale_, o_heads);
  // Back: rows [begin[i], begin[i+1]) to rank i; from rank j this rank's rows of heads j.
  Tensor back = Tensor::empty({p * local, qw});
  group.all_to_all_v(o_heads.view({n, qw}), counts, back, mine);
  float* o_out = o.data<float>();
  for (int j = 0; j < p; ++j) {
    for (int64_t t = 0; t < local; ++t) {
      std::memcpy(o_out + (t * p + j) * qw, back.data<float>() + (j * local + t) * qw,
                  qw * sizeof(float));
    }
  }
}

}  // namespace weft::models
