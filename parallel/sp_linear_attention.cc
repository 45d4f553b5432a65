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

// w[h][j] = factor * g_h^(j + shift) for j = 0..len-1, or g_h^(len-1-j) when `tail`.
std::vector<std::vector<float>> head_weights(const std::vector<float>& gamma, int64_t len,
                                             float factor, bool tail) {
  std::vector<std::vector<float>> w(gamma.size(), std::vector<float>(len));
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
std::vector<std::vector<float>> tail_weights(const std::vector<float>& gamma, int64_t len) {
  return head_weights(gamma, len, 1.0f, true);
}
std::vector<std::vector<float>> query_weights(const std::vector<float>& gamma, int64_t len,
                                              float scale) {
  return head_weights(gamma, len, scale, false);
}

void check_host_f32(const Tensor& t) {
  WEFT_CHECK(t.is_cpu() && t.dtype() == DType::kF32)
      << "sequence-parallel linear attention's state terms run on f32 CPU tensors, got " << t.str();
}

// out[b,h] = sum_j w[h][j] a[b,j,ha,:]^T c[b,j,hc,:]  ([B, H, d, d]), where a/c [B,L,heads,d]
// are read at the head serving query head h (h / (H / heads)).
Tensor weighted_outer(const Tensor& a, const Tensor& c, const std::vector<std::vector<float>>& w) {
  check_host_f32(a);
  check_host_f32(c);
  const int64_t batch = a.dim(0), len = a.dim(1), d = a.dim(3);
  const int64_t heads = static_cast<int64_t>(w.size());
  const int64_t ga = heads / a.dim(2), gc = heads / c.dim(2);
  Tensor out = Tensor::zeros({batch, heads, d, d});
  float* o = out.data<float>();
  const float* ap = a.data<float>();
  const float* cp = c.data<float>();
  std::vector<float> row(d);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      float* s = o + (b * heads + h) * d * d;
      for (int64_t j = 0; j < len; ++j) {
        const float* aj = ap + ((b * len + j) * a.dim(2) + h / ga) * d;
        const float* cj = cp + ((b * len + j) * c.dim(2) + h / gc) * d;
        for (int64_t x = 0; x < d; ++x) row[x] = w[h][j] * aj[x];
        for (int64_t x = 0; x < d; ++x) {
          for (int64_t e = 0; e < d; ++e) s[x * d + e] += row[x] * cj[e];
        }
      }
    }
  }
  return out;
}

// out[b,j,ho,:] += w[h][j] x[b,j,hx,:] op(S[b,h]) for every query head h, op = transpose when
// `transpose`; x/out [B,L,heads,d] are read/written at the head serving h.
void add_rows_times_state(const Tensor& x, const Tensor& state, bool transpose,
                          const std::vector<std::vector<float>>& w, Tensor& out) {
  check_host_f32(x);
  check_host_f32(state);
  check_host_f32(out);
  const int64_t batch = x.dim(0), len = x.dim(1), d = x.dim(3);
  const int64_t heads = static_cast<int64_t>(w.size());
  const int64_t gx = heads / x.dim(2), go = heads / out.dim(2);
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* s = state.data<float>() + (b * heads + h) * d * d;
      for (int64_t j = 0; j < len; ++j) {
        const float* xj = xp + ((b * len + j) * x.dim(2) + h / gx) * d;
        float* oj = op + ((b * len + j) * out.dim(2) + h / go) * d;
        for (int64_t e = 0; e < d; ++e) {
          float acc = 0.0f;
          for (int64_t y = 0; y < d; ++y) acc += xj[y] * (transpose ? s[e * d + y] : s[y * d + e]);
          oj[e] += w[h][j] * acc;
        }
      }
    }
  }
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
