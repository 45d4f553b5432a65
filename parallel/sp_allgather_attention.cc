// LASP-2H softmax attention (docs/algorithms.md "LASP-2"): one all-gather of K and V over the sp
// group, reordered into position order, then the local query runs attend the whole sequence with
// their causal offsets. The backward computes dK/dV for the whole sequence locally and
// reduce-scatters them home. Any layout.
#include "parallel/sp_attention_impl.h"

namespace weft::parallel::sp_detail {

namespace {

class AllGatherAttention final : public SequenceParallelAttention {
 public:
  AllGatherAttention(comm::Communicator& group, const SpAttentionOptions& options)
      : group_(group), options_(options) {}

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v,
                 std::unique_ptr<SpAttentionSaved>* saved) override {
    check_qkv(options_, q, k, v);
    const int p = group_.size();
    const int64_t c = q.dim(1), seq_len = c * p, bx = 2 * q.dim(0), row = k.dim(2) * k.dim(3);
    WEFT_CHECK(check_sp_split(options_.layout, seq_len, "sp attention").ok()) << seq_len;
    const TokenOrder order = token_order(options_.layout, seq_len, 0, p);
    auto st = std::make_unique<Saved>(row);
    // all_gather works on dim 0, so K/V go token-major: local [c, 2B, Hkv, d] rows.
    for (int64_t t = 0; t < c; ++t) {
      for (int64_t x = 0; x < bx; ++x) st->token_major.add(t * bx + x, x * c + t, 1);
    }
    // gathered [P*c, 2B, Hkv, d] (rank-major) -> full [2B, T, Hkv, d] (position order).
    for (int64_t x = 0; x < bx; ++x) {
      for (int i = 0; i < p; ++i) {
        for (int64_t t = 0; t < c; ++t) {
          st->positions.add(x * seq_len + order.slot[i][t], (i * c + t) * bx + x, 1);
        }
      }
    }
    const Tensor kv = pack_kv(k, v);  // [2B, c, Hkv, d]
    Tensor local = Tensor::empty({c, bx, k.dim(2), k.dim(3)}, k.dtype(), k.device());
    st->token_major.copy(kv, local);
    Tensor gathered = Tensor::empty({p * c, bx, k.dim(2), k.dim(3)}, k.dtype(), k.device());
    group_.all_gather(local, gathered);
    st->kv = Tensor::empty({bx, seq_len, k.dim(2), k.dim(3)}, k.dtype(), k.device());
    st->positions.copy(gathered, st->kv);
    st->q = q;
    st->q_runs = options_.layout.runs(seq_len, group_.rank());
    st->k_runs = {Run{0, 0, seq_len}};
    init_output(q, st->o, st->lse);
    attend_block(q, st->q_runs, st->kv, st->k_runs, options_.scale, st->o, st->lse);
    Tensor o = st->o;
    if (saved != nullptr) *saved = std::move(st);
    return o;
  }

  void backward(SpAttentionSaved& saved, const Tensor& dout, Tensor& dq, Tensor& dk,
                Tensor& dv) override {
    Saved* st = &saved_as<Saved>(saved);
    const int p = group_.size();
    const Shape& full = st->kv.shape();  // [2B, T, Hkv, d]
    const int64_t c = full[1] / p;
    Tensor dq_local = Tensor::zeros(st->q.shape(), st->q.dtype(), st->q.device());
    Tensor dkv_full = Tensor::zeros(full, st->kv.dtype(), st->kv.device());
    attend_block_backward(st->q, st->q_runs, st->o, st->lse, dout, st->kv, st->k_runs,
                          options_.scale, dq_local, dkv_full);
    Tensor dgathered =
        Tensor::zeros({p * c, full[0], full[2], full[3]}, st->kv.dtype(), st->kv.device());
    st->positions.add_transposed(dkv_full, dgathered);
    Tensor dlocal = Tensor::empty({c, full[0], full[2], full[3]}, st->kv.dtype(), st->kv.device());
    group_.reduce_scatter(dgathered, dlocal);
    Tensor dkv = Tensor::zeros({full[0], c, full[2], full[3]}, st->kv.dtype(), st->kv.device());
    st->token_major.add_transposed(dlocal, dkv);
    write_output(dq, dq_local);
    unpack_kv(dkv, dk, dv);
  }

 private:
  struct Saved final : SpAttentionSaved {
    explicit Saved(int64_t row) : token_major(row), positions(row) {}
    Tensor q, kv, o, lse;  // kv [2B, T, Hkv, d]: the whole sequence in position order
    std::vector<Run> q_runs, k_runs;
    RowMap token_major;  // [c, 2B] rows <- [2B, c] rows
    RowMap positions;    // [2B, T] rows <- [P*c, 2B] rows
  };

  comm::Communicator& group_;
  SpAttentionOptions options_;
};

}  // namespace

std::unique_ptr<SequenceParallelAttention> make_allgather(comm::Communicator& group,
                                                          const SpAttentionOptions& options) {
  return std::make_unique<AllGatherAttention>(group, options);
}

}  // namespace weft::parallel::sp_detail
