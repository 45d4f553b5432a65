// Names, layouts and option checks of the sequence-parallel attention cores, and the token-order
// and row-copy helpers they share (sp_attention_impl.h).
#include "parallel/sp_attention.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "parallel/sp_attention_impl.h"
#include "parallel/sp_auto.h"
#include "parallel/sp_cost_model.h"
#include "runtime/core/status.h"

namespace weft::parallel {

namespace {

constexpr SpAttnAlgo kAlgos[] = {SpAttnAlgo::kRing, SpAttnAlgo::kUlysses, SpAttnAlgo::kUsp,
                                 SpAttnAlgo::kAllGather, SpAttnAlgo::kAuto};

// The Ulysses group size each algorithm uses (allgather: none; auto: its ring's, the strictest
// about layouts; its Ulysses core is built only when the heads allow).
int ulysses_size(SpAttnAlgo algo, int ranks, int ulysses) {
  switch (algo) {
    case SpAttnAlgo::kRing:
    case SpAttnAlgo::kAuto:
      return 1;
    case SpAttnAlgo::kUlysses:
      return ranks;
    case SpAttnAlgo::kUsp:
      return ulysses;
    case SpAttnAlgo::kAllGather:
      return 1;
  }
  return 1;
}

absl::Status check_options(const comm::Communicator& group, const SpAttentionOptions& o) {
  const std::string what = absl::StrCat("--sp-attn ", sp_attn_name(o.algo));
  const int p = group.size();
  if (o.layout.ranks != p) {
    return invalid_argument(what, ": the layout splits the sequence over ", o.layout.ranks,
                            " ranks but the sp group has ", p);
  }
  if (o.layout.groups < 1 || p % o.layout.groups != 0) {
    return invalid_argument(what, ": layout groups ", o.layout.groups, " do not divide --sp ", p);
  }
  if (o.heads <= 0 || o.kv_heads <= 0 || o.heads % o.kv_heads != 0) {
    return invalid_argument(what, ": heads ", o.heads, " must be a positive multiple of kv heads ",
                            o.kv_heads);
  }
  if (o.algo == SpAttnAlgo::kUsp && (o.ulysses < 1 || p % o.ulysses != 0)) {
    return invalid_argument(what, ": --sp-ulysses ", o.ulysses, " does not divide --sp ", p);
  }
  const int a = ulysses_size(o.algo, p, o.ulysses);
  if (o.algo == SpAttnAlgo::kRing || o.algo == SpAttnAlgo::kUsp || o.algo == SpAttnAlgo::kAuto) {
    // The ring runs over P/a groups: contiguous or zigzag at that level.
    if (o.layout.groups != 1 && o.layout.groups != p / a) {
      return invalid_argument(what, " over ", p / a, " ring groups needs a contiguous layout or a ",
                              "zigzag over ", p / a, " groups, got a zigzag over ",
                              o.layout.groups);
    }
  }
  if (o.heads < a) {
    return invalid_argument(what, ": ", o.heads, " query heads cannot be split over a Ulysses ",
                            "group of ", a, " ranks (needs at least one head per rank)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SpAttnAlgo> parse_sp_attn(const std::string& name) {
  for (SpAttnAlgo algo : kAlgos) {
    if (name == sp_attn_name(algo)) return algo;
  }
  return invalid_argument("--sp-attn ", name, " is not one of ring, ulysses, usp, allgather, auto");
}

const char* sp_attn_name(SpAttnAlgo algo) {
  switch (algo) {
    case SpAttnAlgo::kRing:
      return "ring";
    case SpAttnAlgo::kUlysses:
      return "ulysses";
    case SpAttnAlgo::kUsp:
      return "usp";
    case SpAttnAlgo::kAllGather:
      return "allgather";
    case SpAttnAlgo::kAuto:
      return "auto";
  }
  return "?";
}

SpLayout preferred_layout(SpAttnAlgo algo, int ranks, int ulysses) {
  switch (algo) {
    case SpAttnAlgo::kRing:
    case SpAttnAlgo::kAuto:
      return SpLayout{ranks, ranks};
    case SpAttnAlgo::kUsp:
      return SpLayout{ranks, ulysses >= 1 && ranks % ulysses == 0 ? ranks / ulysses : 1};
    case SpAttnAlgo::kUlysses:
    case SpAttnAlgo::kAllGather:
      return SpLayout{ranks, 1};
  }
  return SpLayout{ranks, 1};
}

absl::StatusOr<std::unique_ptr<SequenceParallelAttention>> make_sp_attention(
    comm::Communicator& group, const SpAttentionOptions& options) {
  WEFT_RETURN_IF_ERROR(check_options(group, options));
  if (options.algo == SpAttnAlgo::kAllGather) return sp_detail::make_allgather(group, options);
  if (options.algo == SpAttnAlgo::kAuto) {
    WEFT_ASSIGN_OR_RETURN(const SpCostParams costs, calibrate_sp_cost(group));
    WEFT_ASSIGN_OR_RETURN(std::unique_ptr<AutoSpAttention> made,
                          make_auto_sp_attention(group, options, costs));
    return std::unique_ptr<SequenceParallelAttention>(std::move(made));
  }
  return sp_detail::make_ulysses_ring(group, options,
                                      ulysses_size(options.algo, group.size(), options.ulysses));
}

namespace sp_detail {

TokenOrder token_order(const SpLayout& layout, int64_t seq_len, int first, int members) {
  std::vector<int64_t> pos;  // members' positions, concatenated in rank order
  for (int m = 0; m < members; ++m) {
    const std::vector<int64_t> p = layout.positions(seq_len, first + m);
    pos.insert(pos.end(), p.begin(), p.end());
  }
  std::vector<int64_t> order(pos.size());  // sorted index -> concatenated index
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return pos[a] < pos[b]; });
  const int64_t c = static_cast<int64_t>(pos.size()) / members;
  TokenOrder out;
  out.slot.assign(members, std::vector<int64_t>(c));
  for (int64_t s = 0; s < static_cast<int64_t>(order.size()); ++s) {
    out.slot[order[s] / c][order[s] % c] = s;
    const int64_t p = pos[order[s]];
    if (out.runs.empty() || p != out.runs.back().start + out.runs.back().len) {
      out.runs.push_back({s, p, 0});
    }
    ++out.runs.back().len;
  }
  return out;
}

void RowMap::add(int64_t dst, int64_t src, int64_t rows) {
  if (!blocks_.empty()) {
    Block& last = blocks_.back();
    if (last.dst + last.rows == dst && last.src + last.rows == src) {
      last.rows += rows;
      return;
    }
  }
  blocks_.push_back({dst, src, rows});
}

void RowMap::copy(const Tensor& src, Tensor& dst) const {
  const Tensor s = src.view({-1, row_});
  const Tensor d = dst.view({-1, row_});
  for (const Block& b : blocks_) {
    Tensor to = d.slice(b.dst, b.dst + b.rows);
    to.copy_from(s.slice(b.src, b.src + b.rows));
  }
}

void RowMap::add_transposed(const Tensor& from, Tensor& to) const {
  const Tensor f = from.view({-1, row_});
  const Tensor t = to.view({-1, row_});
  for (const Block& b : blocks_) {
    Tensor rows = t.slice(b.src, b.src + b.rows);
    kernels::add_(rows, f.slice(b.dst, b.dst + b.rows));
  }
}

Tensor token_view(const Tensor& x, int64_t b, int64_t begin, int64_t len) {
  return x.slice(b, b + 1)
      .view({x.dim(1), x.dim(2), x.dim(3)})
      .slice(begin, begin + len)
      .view({1, len, x.dim(2), x.dim(3)});
}

Tensor lse_view(const Tensor& lse, int64_t heads, int64_t b, const Run& run) {
  return lse.slice(b, b + 1)
      .view({lse.dim(1)})
      .slice(run.local * heads, (run.local + run.len) * heads)
      .view({1, heads, run.len});
}

Tensor pack_kv(const Tensor& k, const Tensor& v) {
  const int64_t b = k.dim(0);
  Tensor kv = Tensor::empty({2 * b, k.dim(1), k.dim(2), k.dim(3)}, k.dtype(), k.device());
  kv.slice(0, b).copy_from(k);
  kv.slice(b, 2 * b).copy_from(v);
  return kv;
}

void unpack_kv(const Tensor& kv, Tensor& k, Tensor& v) {
  const int64_t b = kv.dim(0) / 2;
  write_output(k, kv.slice(0, b));
  write_output(v, kv.slice(b, 2 * b));
}

void check_qkv(const SpAttentionOptions& options, const Tensor& q, const Tensor& k,
               const Tensor& v) {
  WEFT_CHECK(q.ndim() == 4 && q.dim(2) == options.heads)
      << shape_str(q.shape()) << ", heads " << options.heads;
  WEFT_CHECK(k.ndim() == 4 && k.dim(0) == q.dim(0) && k.dim(1) == q.dim(1) &&
             k.dim(2) == options.kv_heads && k.dim(3) == q.dim(3))
      << shape_str(q.shape()) << " " << shape_str(k.shape()) << ", kv heads " << options.kv_heads;
  WEFT_CHECK(v.shape() == k.shape()) << shape_str(v.shape()) << " " << shape_str(k.shape());
}

void write_output(Tensor& out, const Tensor& value) {
  if (!out.defined()) out = Tensor::empty(value.shape(), value.dtype(), value.device());
  out.copy_from(value);
}

void init_output(const Tensor& q, Tensor& o, Tensor& lse) {
  o = Tensor::zeros(q.shape(), q.dtype(), q.device());
  lse = Tensor::empty({q.dim(0), q.dim(1) * q.dim(2)}, DType::kF32, q.device());
  kernels::fill_(lse, -std::numeric_limits<float>::infinity());
}

}  // namespace sp_detail
}  // namespace weft::parallel
