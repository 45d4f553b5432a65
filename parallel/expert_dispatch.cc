#include "parallel/expert_dispatch.h"

#include <numeric>

#include "kernels/ops.h"
#include "runtime/core/check.h"

namespace weft::parallel {
namespace {

int group_size(const comm::Communicator* g) { return g != nullptr ? g->size() : 1; }

}  // namespace

Tensor take_rows(const Tensor& x, const std::vector<int64_t>& from) {
  Shape shape = x.shape();
  shape[0] = static_cast<int64_t>(from.size());
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  for (size_t g = 0; g < from.size(); ++g) {
    out.slice(g, g + 1).copy_from(x.slice(from[g], from[g] + 1));
  }
  return out;
}

Tensor put_rows(const Tensor& y, const std::vector<int64_t>& from, int64_t rows) {
  Shape shape = y.shape();
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, y.dtype(), y.device());
  for (size_t g = 0; g < from.size(); ++g) {
    out.slice(from[g], from[g] + 1).copy_from(y.slice(g, g + 1));
  }
  return out;
}

namespace {

int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), 0LL); }

}  // namespace

Tensor all_gather_rows_v(comm::Communicator& group, const Tensor& x,
                         const std::vector<int64_t>& rows) {
  const int p = group.size();
  WEFT_CHECK_EQ(rows[group.rank()], x.dim(0)) << "all_gather_rows_v: this rank's row count";
  Shape tiled_shape = x.shape();
  tiled_shape[0] = p * x.dim(0);
  Tensor tiled = Tensor::empty(tiled_shape, x.dtype(), x.device());  // x once per rank
  for (int j = 0; j < p; ++j) tiled.slice(j * x.dim(0), (j + 1) * x.dim(0)).copy_from(x);
  Shape out_shape = x.shape();
  out_shape[0] = sum(rows);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  group.all_to_all_v(tiled, std::vector<int64_t>(p, x.dim(0)), out, rows);
  return out;
}

Tensor reduce_scatter_rows_v(comm::Communicator& group, const Tensor& x,
                             const std::vector<int64_t>& rows) {
  const int p = group.size();
  const int64_t mine = rows[group.rank()];
  Shape parts_shape = x.shape();
  parts_shape[0] = p * mine;
  Tensor parts = Tensor::empty(parts_shape, x.dtype(), x.device());  // [P * mine, D]
  group.all_to_all_v(x, rows, parts, std::vector<int64_t>(p, mine));
  Tensor out = parts.slice(0, mine).clone();
  for (int i = 1; i < p; ++i) kernels::add_(out, parts.slice(i * mine, (i + 1) * mine));
  return out;
}

ExpertDispatch::ExpertDispatch(comm::Communicator* ep, comm::Communicator* etp,
                               const std::vector<int64_t>& send_counts, int64_t local_experts)
    : ep_(ep), etp_(etp), sent_(sum(send_counts)) {
  const int p = group_size(ep), q = group_size(etp);
  const int64_t l = local_experts;
  WEFT_CHECK_EQ(static_cast<int64_t>(send_counts.size()), p * l) << "send_counts must be [ep * L]";
  // recv_counts[s * L + j]: rows ep rank s sends for this rank's local expert j.
  std::vector<int64_t> recv_counts = send_counts;
  if (p > 1) {
    Tensor out = Tensor::empty({p * l}, DType::kI64);
    ep->all_to_all(Tensor::from_ints(send_counts, {p * l}), out);
    recv_counts = out.to_ints();
  }
  send_rows_.assign(p, 0);
  recv_rows_.assign(p, 0);
  for (int d = 0; d < p; ++d) {
    for (int64_t j = 0; j < l; ++j) {
      send_rows_[d] += send_counts[d * l + j];
      recv_rows_[d] += recv_counts[d * l + j];
    }
  }
  // The received buffer of etp rank r is source-major, (source s, expert j), and is block r of
  // the etp-gathered buffer: every etp rank's recv_counts place its rows.
  std::vector<int64_t> all_recv = recv_counts;  // [q * p * L]
  if (q > 1) {
    Tensor all = Tensor::empty({q * p * l}, DType::kI64);
    etp->all_gather(Tensor::from_ints(recv_counts, {p * l}), all);
    all_recv = all.to_ints();
  }
  etp_rows_.assign(q, 0);
  std::vector<int64_t> block_start(q * p * l);  // start of (r, s, j) in the gathered buffer
  int64_t at = 0;
  for (int r = 0; r < q; ++r) {
    for (int s = 0; s < p; ++s) {
      for (int64_t j = 0; j < l; ++j) {
        block_start[(r * p + s) * l + j] = at;
        at += all_recv[(r * p + s) * l + j];
        etp_rows_[r] += all_recv[(r * p + s) * l + j];
      }
    }
  }
  // Grouped order: (expert j, etp rank r, source s).
  expert_begin_.assign(l + 1, 0);
  for (int64_t j = 0; j < l; ++j) {
    for (int r = 0; r < q; ++r) {
      for (int s = 0; s < p; ++s) {
        const int64_t begin = block_start[(r * p + s) * l + j];
        for (int64_t i = 0; i < all_recv[(r * p + s) * l + j]; ++i)
          final_from_.push_back(begin + i);
      }
    }
    expert_begin_[j + 1] = static_cast<int64_t>(final_from_.size());
  }
}

Tensor ExpertDispatch::dispatch(const Tensor& x) const {
  WEFT_CHECK_EQ(x.dim(0), sent_) << "dispatch: rows to send";
  Tensor received = x;  // [R, D] source-major
  if (ep_ != nullptr && ep_->size() > 1) {
    Shape shape = x.shape();
    shape[0] = sum(recv_rows_);
    received = Tensor::empty(shape, x.dtype(), x.device());
    ep_->all_to_all_v(x, send_rows_, received, recv_rows_);
  }
  if (etp_ != nullptr && etp_->size() > 1) received = all_gather_rows_v(*etp_, received, etp_rows_);
  return take_rows(received, final_from_);
}

Tensor ExpertDispatch::combine(const Tensor& y) const {
  WEFT_CHECK_EQ(y.dim(0), rows()) << "combine: grouped rows";
  Tensor back = put_rows(y, final_from_, rows());  // [R_etp, D] source-major per etp rank
  if (etp_ != nullptr && etp_->size() > 1) back = reduce_scatter_rows_v(*etp_, back, etp_rows_);
  if (ep_ == nullptr || ep_->size() == 1) return back;
  Shape shape = y.shape();
  shape[0] = sent_;
  Tensor out = Tensor::empty(shape, y.dtype(), y.device());
  ep_->all_to_all_v(back, recv_rows_, out, send_rows_);
  return out;
}

}  // namespace weft::parallel
