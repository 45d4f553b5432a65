#include "runtime/train/planner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/ops.h"
#include "kernels/threads.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace weft::train {
namespace {

constexpr double kBytes = 4;               // f32 on the CPU path
constexpr double kBucketBytes = 25 << 20;  // a gradient-reduction message, about

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The model's sizes, in the names of docs/planner.md.
struct Dims {
  double D, I, V, H, Hkv, d, L, E, k;
  bool tied, bias, moe;
};

Dims dims_of(const io::ModelConfig& c) {
  const int64_t d = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  return {static_cast<double>(c.hidden_size),
          static_cast<double>(c.intermediate_size),
          static_cast<double>(c.vocab_size),
          static_cast<double>(c.num_attention_heads),
          static_cast<double>(c.num_key_value_heads),
          static_cast<double>(d),
          static_cast<double>(c.num_hidden_layers),
          static_cast<double>(c.num_local_experts),
          static_cast<double>(std::max<int64_t>(1, c.num_experts_per_tok)),
          c.tie_word_embeddings,
          c.attention_bias,
          c.is_moe()};
}

std::vector<int> divisors(int n) {
  std::vector<int> out;
  for (int i = 1; i <= n; ++i) {
    if (n % i == 0) out.push_back(i);
  }
  return out;
}

absl::Status check_layout(const PlanRequest& r, const Layout& l) {
  const io::ModelConfig& c = r.model;
  if (l.tp * l.pp * l.sp * l.dp != r.ranks) {
    return invalid_argument("tp ", l.tp, " x pp ", l.pp, " x sp ", l.sp, " x dp ", l.dp,
                            " is not the ", r.ranks, " ranks");
  }
  if (c.num_attention_heads % l.tp != 0) {
    return invalid_argument("tp ", l.tp, " does not divide num_attention_heads ",
                            c.num_attention_heads);
  }
  if (c.num_key_value_heads % l.tp != 0 && l.tp % c.num_key_value_heads != 0) {
    return invalid_argument("tp ", l.tp, " and num_key_value_heads ", c.num_key_value_heads,
                            ": neither divides the other");
  }
  if (c.vocab_size <= static_cast<int64_t>(l.tp - 1) * (l.tp - 1)) {
    return invalid_argument("tp ", l.tp, " leaves the last rank no vocabulary row");
  }
  if (l.pp > c.num_hidden_layers) {
    return invalid_argument("pp ", l.pp, " exceeds the ", c.num_hidden_layers, " layers");
  }
  if (l.sp > 1 && r.seq_len % (2 * l.sp) != 0) {
    return invalid_argument("sp ", l.sp, " needs a sequence length divisible by ", 2 * l.sp);
  }
  if (r.global_batch % l.dp != 0) {
    return invalid_argument("global batch ", r.global_batch, " is not divisible by dp ", l.dp);
  }
  const int64_t per_rank = r.global_batch / l.dp;
  if (l.micro_batch < 0 || (l.micro_batch > 0 && per_rank % l.micro_batch != 0)) {
    return invalid_argument("micro-batch ", l.micro_batch, " does not divide the ", per_rank,
                            " sequences per data-parallel rank");
  }
  if (c.is_moe()) {
    if (c.num_local_experts % l.ep != 0 || (l.tp * l.sp * l.dp) % l.ep != 0) {
      return invalid_argument("ep ", l.ep, " must divide the ", c.num_local_experts,
                              " experts and tp x sp x dp");
    }
  } else if (l.ep != 1) {
    return invalid_argument("ep ", l.ep, " on a model without experts");
  }
  if (l.sequence_parallel && l.tp == 1) return invalid_argument("Megatron-SP needs tp > 1");
  const std::vector<std::string> savers = {"none", "selective", "full", "streambp"};
  if (std::find(savers.begin(), savers.end(), l.recompute) == savers.end()) {
    return invalid_argument("unknown memory saver '", l.recompute, "'");
  }
  if (l.recompute == "streambp" && l.sp > 1) {
    return invalid_argument(
        "StreamBP does not compose with sp (a chunk would attend across ranks)");
  }
  return absl::OkStatus();
}

}  // namespace

std::string Layout::flags(int64_t seq_len) const {
  std::string out = absl::StrCat("--tp ", tp, " --pp ", pp, " --sp ", sp);
  if (ep > 1) absl::StrAppend(&out, " --ep ", ep);
  if (sequence_parallel) absl::StrAppend(&out, " --sequence-parallel");
  if (micro_batch > 0) absl::StrAppend(&out, " --micro-batch ", micro_batch);
  if (recompute == "streambp") {
    absl::StrAppend(&out, " --streambp ", std::max<int64_t>(1, seq_len / 8));
  } else if (recompute != "none") {
    absl::StrAppend(&out, " --recompute ", recompute);
  }
  if (zero1) absl::StrAppend(&out, " --zero 1");
  return out;
}

absl::StatusOr<Prediction> predict(const PlanRequest& r, const MachineModel& m, const Layout& l) {
  WEFT_RETURN_IF_ERROR(check_layout(r, l));
  const Dims s = dims_of(r.model);
  const double T = static_cast<double>(r.seq_len);
  const double B = static_cast<double>(r.global_batch);
  const double tp = l.tp, pp = l.pp, sp = l.sp, dp = l.dp, ep = l.ep;
  const double per_rank = B / dp;
  const double micro = l.micro_batch > 0 ? static_cast<double>(l.micro_batch) : per_rank;
  const double mbs = per_rank / micro;  // micro-batches per rank
  const double n = micro * T / sp;      // rows of one micro-batch on one rank
  const double stage_layers = static_cast<double>(ceil_div(r.model.num_hidden_layers, l.pp));

  // Weights per rank (elements), the most loaded stage: dense (replicated over dp x sp) and
  // expert (replicated over the expert-data-parallel ranks).
  const double kv_rank = l.tp <= r.model.num_key_value_heads ? s.Hkv / tp : 1;
  const double attn = s.D * (s.H / tp) * s.d * 2 + 2 * s.D * kv_rank * s.d +
                      (s.bias ? (s.H / tp) * s.d + 2 * kv_rank * s.d : 0);
  const double mlp = s.moe ? s.E * s.D : 3 * s.D * s.I / tp;  // the router when MoE
  const double experts = s.moe ? (s.E / ep) * 3 * s.D * s.I : 0;
  const double vocab_rows = static_cast<double>(ceil_div(r.model.vocab_size, l.tp));
  const double layer_dense = attn + 2 * s.D + mlp;
  const double first = stage_layers * layer_dense + vocab_rows * s.D;
  const double last =
      stage_layers * layer_dense + s.D + (s.tied && l.pp == 1 ? 0 : vocab_rows * s.D);
  const double dense =
      l.pp == 1 ? first + (s.tied ? 0 : vocab_rows * s.D) + s.D : std::max(first, last);
  const double expert = stage_layers * experts;
  const double edp = tp * sp * dp / ep;

  Prediction p;
  p.layout = l;
  p.weight_bytes = static_cast<int64_t>(2 * kBytes * (dense + expert));
  p.optimizer_bytes = static_cast<int64_t>(
      2 * kBytes * (dense / (l.zero1 ? dp * sp : 1) + expert / (l.zero1 ? edp : 1)));

  // Activations one layer keeps for one micro-batch (elements): the residual-stream tensors
  // (split over tp under Megatron-SP), the gathered norm outputs, q, k, v, the attention
  // output, the MLP's gate, up and their product (MoE: its routed rows).
  const double dsz = l.sequence_parallel ? s.D / tp : s.D;
  const double q = (s.H / tp) * s.d, kv = kv_rank * s.d;
  const double ffn = s.moe ? s.k * (s.D + 3 * s.I) + s.E : 3 * s.I / tp;
  const double layer_all = n * (2 * dsz + 2 * s.D + 2 * q + 2 * kv + ffn);
  double layer_kept = layer_all;
  double working = layer_all;  // the backward's own buffers, about one layer's activations
  if (l.recompute == "selective") {
    layer_kept = layer_all - n * q;
  } else if (l.recompute == "full") {
    layer_kept = n * dsz;
  } else if (l.recompute == "streambp") {
    layer_kept = n * dsz;
    working = n * (3 * s.D + 4 * kv) + layer_all / 8;  // shared K, V and their grads + a chunk
  }
  const double head = (l.recompute == "streambp" ? n / 8 : n) * vocab_rows * 2;
  const double in_flight = l.pp == 1 ? 1 : std::min(pp, mbs);  // 1F1B on the first stage
  const double acts = std::max(in_flight * stage_layers * layer_kept + working,
                               stage_layers * layer_kept + working + head);
  p.activation_bytes = static_cast<int64_t>(kBytes * acts);
  p.peak_bytes = p.weight_bytes + p.optimizer_bytes + p.activation_bytes;
  p.fits = r.memory_bytes <= 0 || p.peak_bytes <= r.memory_bytes;

  // Compute: the step's flops over all ranks, each rank at its share of its node's cores.
  const double tokens = B * T;
  const double pairs = B * s.H * T * (T + 1) / 2;  // causal (query, key) pairs, all heads
  const double layer_matmul = 2 * (s.D * s.H * s.d * 2 + 2 * s.D * s.Hkv * s.d +
                                   (s.moe ? s.k * 3 * s.D * s.I + s.E * s.D : 3 * s.D * s.I));
  const double fwd_layers = s.L * (layer_matmul * tokens + 4 * s.d * pairs);
  const double head_fwd = 2 * s.V * s.D * tokens;
  double flops = 3 * (fwd_layers + head_fwd) + s.L * 6 * s.d * pairs;  // bwd: 2x matmuls, 10d
  if (l.recompute == "full" || l.recompute == "streambp") flops += fwd_layers;
  if (l.recompute == "selective") flops += s.L * 4 * s.d * pairs;
  const int on_node = m.ranks_per_node > 0 ? std::min(r.ranks, m.ranks_per_node) : r.ranks;
  const double rank_flops = m.flops_per_core * m.efficiency * m.cores / on_node;
  // Threads per rank: a rank alone on several cores gains only on its parallel share.
  const double threads = std::max(1.0, static_cast<double>(m.cores) / on_node);
  const double amdahl = 1 + m.serial_share * (threads - 1);
  // The 1F1B bubble idles a stage's cores; when the node runs more ranks than cores, the other
  // stages' ranks use them, and the bubble costs nothing.
  const double bubble = on_node > m.cores ? 1 : (mbs + pp - 1) / mbs;
  const double passes = (l.recompute == "none" || l.recompute == "selective") ? 2 : 3;
  p.compute_s =
      (flops / r.ranks / rank_flops * amdahl + passes * stage_layers * mbs * m.layer_overhead_s) *
      bubble;

  // Communication of the most loaded rank: bytes sent and dependent calls.
  double bytes = 0, messages = 0;
  const double calls = stage_layers * mbs;  // layer x micro-batch visits
  if (l.tp > 1) {
    const double fwd_calls = (l.recompute == "full" || l.recompute == "streambp") ? 4 : 2;
    bytes += (fwd_calls + 2) * 2 * (tp - 1) / tp * n * s.D * kBytes * calls;
    messages += (fwd_calls + 2) * (l.sequence_parallel ? 2 : 1) * calls;
  }
  if (l.pp > 1) {
    bytes += 2 * n * s.D * kBytes * mbs;
    messages += 4 * mbs;
  }
  if (l.sp > 1) {
    bytes += (sp - 1) * (2 + 4) * n * kv * kBytes * calls;
    messages += 3 * (sp - 1) * calls;
  }
  if (l.dp * l.sp > 1) {
    const double g = dp * sp;
    const double grad = 2 * (g - 1) / g * dense * kBytes;
    bytes += grad;
    messages += std::ceil(grad / kBucketBytes) + 1;
  }
  if (edp > 1 && s.moe) {
    bytes += 2 * (edp - 1) / edp * expert * kBytes;
    messages += 1;
  }
  if (l.ep > 1) {
    bytes += 4 * (ep - 1) / ep * n * s.k * s.D * kBytes * calls;
    messages += 4 * calls;
  }
  p.comm_s = messages * m.latency_s + bytes / m.bytes_per_s;
  p.step_s = p.compute_s + p.comm_s;
  p.tokens_per_s = tokens / p.step_s;
  return p;
}

absl::StatusOr<std::vector<Prediction>> plan(const PlanRequest& r, const MachineModel& m) {
  std::vector<Prediction> out;
  const std::vector<std::string> savers = {"none", "selective", "full", "streambp"};
  for (int tp : divisors(r.ranks)) {
    for (int pp : divisors(r.ranks / tp)) {
      for (int sp : divisors(r.ranks / tp / pp)) {
        const int dp = r.ranks / tp / pp / sp;
        for (int ep : r.model.is_moe() ? divisors(tp * sp * dp) : std::vector<int>{1}) {
          for (bool seq_par : {false, true}) {
            for (const std::string& saver : savers) {
              for (bool zero : {false, true}) {
                if (zero && dp * sp == 1) continue;
                for (int64_t micro : {int64_t{0}, int64_t{1}}) {
                  Layout l{tp, pp, sp, dp, ep, seq_par, micro, saver, zero};
                  absl::StatusOr<Prediction> p = predict(r, m, l);
                  if (p.ok()) out.push_back(*p);
                }
              }
            }
          }
        }
      }
    }
  }
  if (out.empty()) {
    return invalid_argument("no layout of ", r.ranks, " ranks suits this model (heads ",
                            r.model.num_attention_heads, ", kv heads ", r.model.num_key_value_heads,
                            ", layers ", r.model.num_hidden_layers, ") with global batch ",
                            r.global_batch, " and sequence length ", r.seq_len);
  }
  std::stable_sort(out.begin(), out.end(), [](const Prediction& a, const Prediction& b) {
    if (a.fits != b.fits) return a.fits;
    if (a.fits && a.step_s != b.step_s) return a.step_s < b.step_s;
    return a.peak_bytes < b.peak_bytes;
  });
  return out;
}

absl::StatusOr<Layout> parse_layout(const std::string& text, int ranks) {
  Layout l;
  bool dp_given = false;
  for (const absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const std::vector<std::string> kv = absl::StrSplit(part, '=');
    int value = 0;
    if (kv.size() != 2 || !absl::SimpleAtoi(kv[1], &value) || value < 1) {
      return invalid_argument("--mesh: '", part, "' is not NAME=N with N >= 1 (e.g. tp=2,pp=1)");
    }
    if (kv[0] == "tp") {
      l.tp = value;
    } else if (kv[0] == "pp") {
      l.pp = value;
    } else if (kv[0] == "sp") {
      l.sp = value;
    } else if (kv[0] == "ep") {
      l.ep = value;
    } else if (kv[0] == "dp") {
      l.dp = value;
      dp_given = true;
    } else {
      return invalid_argument("--mesh: unknown dimension '", kv[0], "' (tp, pp, sp, dp, ep)");
    }
  }
  const int model_parallel = l.tp * l.pp * l.sp;
  if (!dp_given) {
    if (ranks % model_parallel != 0) {
      return invalid_argument("--mesh: tp x pp x sp = ", model_parallel, " does not divide the ",
                              ranks, " ranks");
    }
    l.dp = ranks / model_parallel;
  }
  return l;
}

double measure_core_flops() {
  const int threads = kernels::cpu_threads();
  kernels::set_cpu_threads(1);
  const int64_t n = 256;
  const Tensor a = Tensor::full({n, n}, 0.5f).host(), b = Tensor::full({n, n}, 0.25f).host();
  Tensor c = Tensor::zeros({n, n}, DType::kF32, Device::cpu());
  kernels::gemm(a, false, b, false, c);  // warm up
  const auto start = std::chrono::steady_clock::now();
  int reps = 0;
  double elapsed = 0;
  do {
    kernels::gemm(a, false, b, false, c);
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < 0.2);
  kernels::set_cpu_threads(threads);
  return 2.0 * n * n * n * reps / elapsed;
}

}  // namespace weft::train
