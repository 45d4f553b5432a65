// The run-by-run work shared by LASP-2 and ZeCO (sp_linear_runs.h): per run, the local state
// first, then the exchange is started, the intra-run output (or gradient) computed while it
// runs, and the terms through the carried state added once it completes.
#include "parallel/sp_linear_attention.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "parallel/sp_auto.h"
#include "parallel/sp_cost_model.h"
#include "parallel/sp_linear_runs.h"
#include "runtime/core/check.h"
#include "runtime/core/status.h"

namespace weft::parallel {

absl::StatusOr<SpLinearAlgo> parse_sp_linear(const std::string& name) {
  for (SpLinearAlgo algo : {SpLinearAlgo::kLasp2, SpLinearAlgo::kZeco, SpLinearAlgo::kAuto}) {
    if (name == sp_linear_name(algo)) return algo;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown sequence-parallel linear attention '", name, "' (lasp2, zeco, auto)"));
}

const char* sp_linear_name(SpLinearAlgo algo) {
  switch (algo) {
    case SpLinearAlgo::kLasp2:
      return "lasp2";
    case SpLinearAlgo::kZeco:
      return "zeco";
    case SpLinearAlgo::kAuto:
      return "auto";
  }
  return "?";
}

namespace sp_linear {

namespace {

// Positions per chunk of the chunked kernel (as models/linear_attention.cc).
constexpr int64_t kChunk = 64;

using Weights = std::vector<std::vector<float>>;  // [H][L]: per query head and run position

// w[h][j] = factor * g_h^(j + shift) for j = 0..len-1, or g_h^(len-1-j) when `tail`.
Weights head_weights(const std::vector<float>& gamma, int64_t len, float factor, bool tail) {
  Weights w(gamma.size(), std::vector<float>(len));
  for (size_t h = 0; h < gamma.size(); ++h) {
    for (int64_t j = 0; j < len; ++j) {
      const int64_t power = tail ? len - 1 - j : j + 1;
      w[h][j] = factor * static_cast<float>(std::pow(double{gamma[h]}, power));
    }
  }
  return w;
}

// Weights of a run's positions in its local state (g^(L-1-j)) and in its query terms
// (scale g^(j+1)).
Weights tail_weights(const std::vector<float>& gamma, int64_t len) {
  return head_weights(gamma, len, 1.0f, true);
}
Weights query_weights(const std::vector<float>& gamma, int64_t len, float scale) {
  return head_weights(gamma, len, scale, false);
}

// Rows i*rows .. (i+1)*rows - 1 of t seen as [numel / last, last]: block i of a stack of
// [rows, last] matrices, e.g. head (b, h) of [B, H, L, d] with rows = L.
Tensor block(const Tensor& t, int64_t i, int64_t rows) {
  const int64_t last = t.dim(-1);
  return t.view({t.numel() / last, last}).slice(i * rows, (i + 1) * rows);
}

// t itself when it is an f32 host tensor, else an f32 host copy: the row moves between the
// token-major and head-major layouts run on the host (kernels/ops.h has no strided copy).
Tensor host_f32(const Tensor& t) {
  const Tensor host = t.host();
  return host.dtype() == DType::kF32 ? host : host.to_dtype(DType::kF32);
}

// Calls f(token_row, head_row, h, j) with the element offsets of row (b, j, h / (heads / n)) of a
// token-major [B, L, n, d] tensor and row (b, h, j) of a head-major [B, heads, L, d] one, for
// every b, h < heads and j < len.
template <typename F>
void for_each_row(int64_t batch, int64_t len, int64_t n, int64_t heads, int64_t d, F f) {
  const int64_t group = heads / n;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t j = 0; j < len; ++j) {
        f(((b * len + j) * n + h / group) * d, ((b * heads + h) * len + j) * d, h, j);
      }
    }
  }
}

// [B, heads, L, d] f32 on x's device, row (b, h, j) = w[h][j] x[b, j, h / (heads / n), :] with
// x [B, L, n, d]; unweighted when w is null. A device x round-trips through the host.
Tensor gather_heads(const Tensor& x, int64_t heads, const Weights* w) {
  const int64_t batch = x.dim(0), len = x.dim(1), d = x.dim(3);
  const Tensor src = host_f32(x);
  Tensor dst = Tensor::empty({batch, heads, len, d}, DType::kF32, Device::cpu());
  const float* sp = src.data<float>();
  float* dp = dst.data<float>();
  for_each_row(batch, len, x.dim(2), heads, d, [&](int64_t t, int64_t r, int64_t h, int64_t j) {
    const float wj = w == nullptr ? 1.0f : (*w)[h][j];
    for (int64_t e = 0; e < d; ++e) dp[r + e] = wj * sp[t + e];
  });
  return dst.on(x.device());
}

// out[b, j, o, :] += y[b, o, j, :] with y [B, n, L, d] f32 and out [B, L, n, d].
void scatter_add_heads(const Tensor& y, Tensor& out) {
  const int64_t batch = out.dim(0), len = out.dim(1), n = out.dim(2), d = out.dim(3);
  const Tensor src = host_f32(y);
  const bool in_place = out.is_host() && out.dtype() == DType::kF32;  // dst is out itself
  Tensor dst = host_f32(out);
  const float* sp = src.data<float>();
  float* dp = dst.data<float>();
  for_each_row(batch, len, n, n, d, [&](int64_t t, int64_t r, int64_t, int64_t) {
    for (int64_t e = 0; e < d; ++e) dp[t + e] += sp[r + e];
  });
  if (!in_place) {
    out.copy_from(dst.dtype() == out.dtype() ? dst : dst.to_dtype(out.dtype()));
  }
}

// out[b,h] = sum_j w[h][j] a[b,j,ha,:]^T c[b,j,hc,:]  ([B, H, d, d] f32), where a/c [B,L,heads,d]
// are read at the head serving query head h (h / (H / heads)): per (b, h) one gemm A_w^T C of the
// head's gathered rows, A_w [L, d] scaled by the weights, C [L, d].
Tensor weighted_outer(const Tensor& a, const Tensor& c, const Weights& w) {
  const int64_t batch = a.dim(0), len = a.dim(1), d = a.dim(3);
  const int64_t heads = static_cast<int64_t>(w.size()), gc = heads / c.dim(2);
  const Tensor aw = gather_heads(a, heads, &w);          // [B, H, L, d]
  const Tensor cg = gather_heads(c, c.dim(2), nullptr);  // [B, Hc, L, d]
  Tensor out = Tensor::empty({batch, heads, d, d}, DType::kF32, a.device());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      Tensor m = block(out, b * heads + h, d);
      kernels::gemm(block(aw, b * heads + h, len), true, block(cg, b * c.dim(2) + h / gc, len),
                    false, m);
    }
  }
  return out;
}

// out[b,j,ho,:] += w[h][j] x[b,j,hx,:] op(S[b,h]) for every query head h, op = transpose when
// `transpose`; x/out [B,L,heads,d] are read/written at the head serving h. Per (b, h) one gemm
// X_w op(S) of the head's gathered, weighted rows X_w [L, d], the query heads of one out head
// accumulating into the same [L, d] block, which is then added into out's rows.
void add_rows_times_state(const Tensor& x, const Tensor& state, bool transpose, const Weights& w,
                          Tensor& out) {
  const int64_t batch = x.dim(0), len = x.dim(1), d = x.dim(3), n = out.dim(2);
  const int64_t heads = static_cast<int64_t>(w.size()), go = heads / n;
  const Tensor xw = gather_heads(x, heads, &w);                             // [B, H, L, d]
  Tensor y = Tensor::empty({batch, n, len, d}, DType::kF32, out.device());  // [B, n, L, d]
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      Tensor yh = block(y, b * n + h / go, len);
      kernels::gemm(block(xw, b * heads + h, len), false, block(state, b * heads + h, d), transpose,
                    yh, 1.0f, h % go == 0 ? 0.0f : 1.0f);
    }
  }
  scatter_add_heads(y, out);
}

// dst rows [dst_first, dst_first + len) of dim 1 = src rows [src_first, ...); both [B, *, n, d].
void copy_positions(const Tensor& src, int64_t src_first, Tensor& dst, int64_t dst_first,
                    int64_t len) {
  const int64_t batch = src.dim(0), row = src.dim(2) * src.dim(3);
  const Tensor s = src.view({batch * src.dim(1), row});
  Tensor d = dst.view({batch * dst.dim(1), row});
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t from = b * src.dim(1) + src_first, to = b * dst.dim(1) + dst_first;
    Tensor part = d.slice(to, to + len);
    part.copy_from(s.slice(from, from + len));
  }
}

// x [B, c, n, d] -> the run's rows [B, L, n, d] (a copy).
Tensor run_rows(const Tensor& x, const SpLayout::Run& run) {
  Tensor out = Tensor::empty({x.dim(0), run.len, x.dim(2), x.dim(3)}, x.dtype(), x.device());
  copy_positions(x, run.local, out, 0, run.len);
  return out;
}

struct RunTensors {
  Tensor q, k, v;  // [B, L, H, d], [B, L, Hkv, d] x2
  Tensor s_in;     // [B, H, d, d] the state carried into the run
};

class Saved final : public SpLinearSaved {
 public:
  RunPlan plan;
  float scale = 0.0f;
  std::vector<RunTensors> runs;
};

class RunSplitLinearAttention final : public SequenceParallelLinearAttention {
 public:
  RunSplitLinearAttention(comm::Communicator& group, SpLayout layout,
                          std::unique_ptr<StateExchange> exchange)
      : group_(group), layout_(layout), exchange_(std::move(exchange)) {}

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<float>& gamma,
                 float scale, std::unique_ptr<SpLinearSaved>* saved) override {
    auto state = std::make_unique<Saved>();
    state->plan = plan(q, gamma);
    state->scale = scale;
    const RunPlan& p = state->plan;
    std::vector<Tensor> m, s_in;
    for (const SpLayout::Run& run : p.runs) {
      RunTensors& r = state->runs.emplace_back();
      r.q = run_rows(q, run);
      r.k = run_rows(k, run);
      r.v = run_rows(v, run);
      m.push_back(weighted_outer(r.k, r.v, tail_weights(gamma, run.len)));
      s_in.push_back(Tensor::zeros(p.state_shape, DType::kF32, q.device()));
    }
    std::unique_ptr<PendingStates> pending = exchange_->start_forward(p, m, s_in);
    std::vector<Tensor> outs;  // [B, L, H, d] per run: the intra-run output
    Tensor m_scratch = Tensor::empty(p.state_shape, DType::kF32, q.device());
    for (const RunTensors& r : state->runs) {
      Tensor& o = outs.emplace_back(Tensor::empty(r.q.shape(), q.dtype(), q.device()));
      kernels::linear_attention_forward(r.q, r.k, r.v, gamma, scale, Tensor(), kChunk, o,
                                        m_scratch);
    }
    pending->finish();
    Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());  // [B, c, H, d]
    for (size_t i = 0; i < p.runs.size(); ++i) {
      RunTensors& r = state->runs[i];
      r.s_in = s_in[i];
      add_rows_times_state(r.q, r.s_in, false, query_weights(gamma, p.runs[i].len, scale), outs[i]);
      copy_positions(outs[i], 0, out, p.runs[i].local, p.runs[i].len);
    }
    if (saved != nullptr) *saved = std::move(state);
    return out;
  }

  void backward(SpLinearSaved& saved, const Tensor& dout, Tensor& dq, Tensor& dk,
                Tensor& dv) override {
    auto& state = static_cast<Saved&>(saved);
    const RunPlan& p = state.plan;
    std::vector<Tensor> douts, n, ds_out;
    for (size_t i = 0; i < p.runs.size(); ++i) {
      douts.push_back(run_rows(dout, p.runs[i]));
      n.push_back(weighted_outer(state.runs[i].q, douts[i],
                                 query_weights(p.gamma, p.runs[i].len, state.scale)));
      ds_out.push_back(Tensor::zeros(p.state_shape, DType::kF32, dout.device()));
    }
    std::unique_ptr<PendingStates> pending = exchange_->start_backward(p, n, ds_out);
    std::vector<RunTensors> grads;  // per run: dq, dk, dv (everything but the dS_out terms)
    Tensor ds_scratch = Tensor::empty(p.state_shape, DType::kF32, dout.device());
    for (size_t i = 0; i < p.runs.size(); ++i) {
      const RunTensors& r = state.runs[i];
      RunTensors& g = grads.emplace_back();
      g.q = Tensor::zeros(r.q.shape(), r.q.dtype(), r.q.device());
      g.k = Tensor::zeros(r.k.shape(), r.k.dtype(), r.k.device());
      g.v = Tensor::zeros(r.v.shape(), r.v.dtype(), r.v.device());
      kernels::linear_attention_backward(r.q, r.k, r.v, p.gamma, state.scale, r.s_in, douts[i],
                                         Tensor(), kChunk, g.q, g.k, g.v, ds_scratch);
    }
    pending->finish();
    for (size_t i = 0; i < p.runs.size(); ++i) {
      const SpLayout::Run& run = p.runs[i];
      const RunTensors& r = state.runs[i];
      RunTensors& g = grads[i];
      const auto w = tail_weights(p.gamma, run.len);
      add_rows_times_state(r.v, ds_out[i], true, w, g.k);
      add_rows_times_state(r.k, ds_out[i], false, w, g.v);
      copy_positions(g.q, 0, dq, run.local, run.len);
      copy_positions(g.k, 0, dk, run.local, run.len);
      copy_positions(g.v, 0, dv, run.local, run.len);
    }
  }

 private:
  RunPlan plan(const Tensor& q, const std::vector<float>& gamma) const {
    WEFT_CHECK_EQ(static_cast<int64_t>(gamma.size()), q.dim(2)) << "one decay per query head";
    RunPlan p;
    p.layout = layout_;
    p.rank = group_.rank();
    p.seq_len = q.dim(1) * group_.size();
    p.runs = layout_.runs(p.seq_len, p.rank);
    p.gamma = gamma;
    p.state_shape = {q.dim(0), q.dim(2), q.dim(3), q.dim(3)};
    return p;
  }

  comm::Communicator& group_;
  SpLayout layout_;
  std::unique_ptr<StateExchange> exchange_;
};

}  // namespace

Tensor state_decay(const Shape& state_shape, const std::vector<float>& gamma, int64_t len,
                   Device device) {
  const int64_t heads = state_shape[1], dd = state_shape[2] * state_shape[3];
  std::vector<float> per_head(heads);  // one pow per head, not per entry
  for (int64_t h = 0; h < heads; ++h) {
    per_head[h] = static_cast<float>(std::pow(double{gamma[h]}, len));
  }
  std::vector<float> values(shape_numel(state_shape));
  for (size_t i = 0; i < values.size(); ++i) values[i] = per_head[(i / dd) % heads];
  return Tensor::from_floats(values, state_shape).to(device);
}

}  // namespace sp_linear

absl::StatusOr<std::unique_ptr<SequenceParallelLinearAttention>> make_sp_linear_attention(
    comm::Communicator& group, const SpLinearOptions& options) {
  if (options.layout.ranks != group.size()) {
    return absl::InvalidArgumentError(absl::StrCat("sp layout over ", options.layout.ranks,
                                                   " ranks on a group of ", group.size()));
  }
  if (options.algo == SpLinearAlgo::kAuto) {
    WEFT_ASSIGN_OR_RETURN(const SpCostParams costs, calibrate_sp_cost(group));
    WEFT_ASSIGN_OR_RETURN(std::unique_ptr<AutoSpLinearAttention> made,
                          make_auto_sp_linear_attention(group, options, costs));
    return std::unique_ptr<SequenceParallelLinearAttention>(std::move(made));
  }
  std::unique_ptr<sp_linear::StateExchange> exchange;
  if (options.algo == SpLinearAlgo::kLasp2) {
    exchange = sp_linear::make_lasp2_exchange(group);
  } else {
    WEFT_ASSIGN_OR_RETURN(exchange, sp_linear::make_zeco_exchange(group, options));
  }
  return std::make_unique<sp_linear::RunSplitLinearAttention>(group, options.layout,
                                                              std::move(exchange));
}

}  // namespace weft::parallel
