// Paged attention in shift parallelism's sequence-parallel mode (docs/serving.md "Shift
// parallelism"). This model holds every head's weights; the step's rows are split over the
// group; the KV cache is the tensor-parallel layout's, rank j holding KV heads
// [j*Hkv/P, (j+1)*Hkv/P) (and query heads [j*H/P, (j+1)*H/P) attend to them). Ulysses: each rank
// sends rank j the q, k, v of heads j of its rows; rank j writes the step's keys and values of
// its heads into its cache shard and attends for every row of the step; a second all-to-all
// returns each rank its rows with every head. The cache is the one tensor-parallel steps use,
// so steps of either mode read what the other wrote.
#include <vector>

#include "kernels/ops.h"
#include "models/softmax_attention.h"

namespace weft::models {

namespace {

// dst's elements [dst_at, dst_at + n) = src's [src_at, src_at + n), on any device (a copy of one
// contiguous run; the layouts below move whole head runs of a row).
void copy_run(const Tensor& dst, int64_t dst_at, const Tensor& src, int64_t src_at, int64_t n) {
  dst.view({-1}).slice(dst_at, dst_at + n).copy_from(src.view({-1}).slice(src_at, src_at + n));
}

}  // namespace

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
  for (int j = 0; j < p; ++j) {
    for (int64_t t = 0; t < local; ++t) {
      const int64_t row = (j * local + t) * width;
      copy_run(send, row, qkv.q, (t * p + j) * qw, qw);
      copy_run(send, row + qw, qkv.k, (t * p + j) * kw, kw);
      copy_run(send, row + qw + kw, qkv.v, (t * p + j) * kw, kw);
    }
  }
  std::vector<int64_t> counts(p), mine(p, local);
  for (int i = 0; i < p; ++i) counts[i] = begin[i + 1] - begin[i];
  Tensor recv = Tensor::empty({n, width});  // every row of the step, this rank's heads
  group.all_to_all_v(send, mine, recv, counts);
  Tensor q_heads = Tensor::empty({n, hq, d});
  Tensor k_heads = Tensor::empty({n, hk, d});
  Tensor v_heads = Tensor::empty({n, hk, d});
  for (int64_t t = 0; t < n; ++t) {
    copy_run(q_heads, t * qw, recv, t * width, qw);
    copy_run(k_heads, t * kw, recv, t * width + qw, kw);
    copy_run(v_heads, t * kw, recv, t * width + qw + kw, kw);
  }
  kernels::kv_cache_write(k_heads, v_heads, paged.slots, k_cache, v_cache);
  Tensor o_heads = Tensor::empty({n, hq, d});
  kernels::paged_attention_forward(q_heads, k_cache, v_cache, paged.block_tables, paged.seq,
                                   paged.positions, scale_, o_heads);
  // Back: rows [begin[i], begin[i+1]) to rank i; from rank j this rank's rows of heads j.
  Tensor back = Tensor::empty({p * local, qw});
  group.all_to_all_v(o_heads.view({n, qw}), counts, back, mine);
  for (int j = 0; j < p; ++j) {
    for (int64_t t = 0; t < local; ++t)
      copy_run(o, (t * p + j) * qw, back, (j * local + t) * qw, qw);
  }
}

}  // namespace weft::models
