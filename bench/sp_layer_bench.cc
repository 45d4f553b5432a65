// One layer's sequence-parallel attention core, forward + backward, per algorithm, as the
// sequence grows (docs/algorithms.md "Ring attention", "Ulysses", "LASP-2", "ZeCO and All-Scan"):
//   mpirun -np P build/bench/sp_layer_bench [--seq 512,1024,2048,4096] [--batch 1] [--heads 8]
//       [--kv-heads 4] [--dim 64] [--repeats 3]
// Softmax cores: ring, ulysses (heads >= P), usp (P >= 4, Ulysses groups of 2), allgather, auto;
// all under the zigzag over the ranks (auto's layout; usp: the zigzag over its ring level).
// Linear cores: lasp2, zeco, auto, under the contiguous layout and the zigzag over the ranks.
// Per (core, T): the median over `repeats` (after one warm-up; the cores interleaved) of the
// slowest rank's forward + backward seconds, the bytes one rank sends (mean over the ranks, from
// the traffic counters of the group and of every group split from it), and the cost model's
// prediction with the costs auto measured; auto's line names the core it ran. Rank 0 prints one
// JSON line each.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"
#include "kernels/threads.h"
#include "parallel/sp_attention.h"
#include "parallel/sp_auto.h"
#include "parallel/sp_cost_model.h"
#include "parallel/sp_linear_attention.h"
#include "runtime/core/check.h"
#include "runtime/core/clock.h"

namespace weft::parallel {
namespace {

using comm::CallStats;
using comm::Communicator;
using comm::WorkPtr;

// Uniform values in [lo, hi), the same on every run for one seed.
Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(shape_numel(shape));
  for (float& x : values) x = dist(gen);
  return Tensor::from_floats(values, shape);
}

// ---- timing -------------------------------------------------------------------------------

struct Options {
  std::vector<int64_t> seq = {512, 1024, 2048, 4096};
  int64_t batch = 1, heads = 8, kv_heads = 4, dim = 64;
  int64_t repeats = 3;
};

struct Measured {
  double seconds = 0;  // median of the slowest rank's
  double bytes = 0;    // one rank's, mean over the ranks
};

// One forward + backward of one core.
using Step = std::function<void()>;

// Times every step on every rank of `group`, round-robin (repeat i of every step before repeat
// i + 1 of any), so that a change in the machine's load falls on all of them alike.
std::vector<Measured> measure(Communicator& group, int64_t repeats,
                              const std::vector<Step>& steps) {
  for (const Step& step : steps) step();  // warm-up
  std::vector<std::vector<double>> seconds(steps.size());
  std::vector<Measured> out(steps.size());
  for (int64_t i = 0; i < repeats; ++i) {
    for (size_t j = 0; j < steps.size(); ++j) {
      group.barrier();
      group.reset_stats();
      const auto start = SteadyClock::now();
      steps[j]();
      const double mine = seconds_since(start);
      const double sent = static_cast<double>(comm::total(group.stats()).bytes_sent);
      Tensor slowest = Tensor::from_floats({static_cast<float>(mine)}, {1});
      group.all_reduce(slowest, comm::ReduceOp::kMax);
      Tensor total = Tensor::from_floats({static_cast<float>(sent)}, {1});
      group.all_reduce(total);
      seconds[j].push_back(slowest.to_floats()[0]);
      out[j].bytes = total.to_floats()[0] / group.size();
    }
  }
  for (size_t j = 0; j < steps.size(); ++j) {
    std::sort(seconds[j].begin(), seconds[j].end());
    out[j].seconds = seconds[j][seconds[j].size() / 2];
  }
  return out;
}

void print_line(const Communicator& group, const std::string& kind, const std::string& algo,
                const std::string& layout, int64_t seq, const Measured& m, const SpCost* predicted,
                const std::string& pick) {
  if (group.rank() != 0) return;
  std::printf(
      "{\"kind\": \"%s\", \"algo\": \"%s\", \"layout\": \"%s\", \"P\": %d, \"T\": %lld, "
      "\"time_s\": %.6f, \"bytes\": %.0f",
      kind.c_str(), algo.c_str(), layout.c_str(), group.size(), static_cast<long long>(seq),
      m.seconds, m.bytes);
  if (predicted != nullptr) {
    std::printf(", \"pred_s\": %.6f, \"pred_bytes\": %.0f", predicted->seconds, predicted->bytes);
  }
  if (!pick.empty()) std::printf(", \"pick\": \"%s\"", pick.c_str());
  std::printf("}\n");
  std::fflush(stdout);
}

// ---- softmax cores --------------------------------------------------------------------------

struct SoftmaxCore {
  std::string label;
  SpAttentionOptions options;
  std::unique_ptr<SequenceParallelAttention> core;
};

std::vector<SoftmaxCore> softmax_cores(Communicator& group, const Options& o) {
  const int p = group.size();
  std::vector<SoftmaxCore> out;
  auto add = [&](const std::string& label, SpAttnAlgo algo, int ulysses) {
    SpAttentionOptions opts{
        .algo = algo,
        .layout = algo == SpAttnAlgo::kUsp ? preferred_layout(algo, p, ulysses) : SpLayout{p, p},
        .ulysses = ulysses,
        .scale = 1.0f / std::sqrt(static_cast<float>(o.dim)),
        .heads = o.heads,
        .kv_heads = o.kv_heads};
    auto made = make_sp_attention(group, opts);
    WEFT_CHECK(made.ok()) << made.status().ToString();
    out.push_back({label, opts, std::move(*made)});
  };
  add("ring", SpAttnAlgo::kRing, 1);
  if (o.heads >= p) add("ulysses", SpAttnAlgo::kUlysses, p);
  if (p >= 4 && p % 2 == 0) add("usp", SpAttnAlgo::kUsp, 2);
  add("allgather", SpAttnAlgo::kAllGather, 1);
  add("auto", SpAttnAlgo::kAuto, 1);
  return out;
}

// What auto would pick for this shape if the link were 10x, 100x, 1000x slower per byte (the
// cost model alone: this machine has no such link to measure).
void print_what_if(const Communicator& group, const AutoSpAttention& autocore,
                   const SpAttnShape& shape, const SpLayout& layout, int64_t seq) {
  if (group.rank() != 0) return;
  for (double scale : {10.0, 100.0, 1000.0}) {
    SpCostParams costs = autocore.costs();
    costs.beta *= scale;
    std::vector<SpCost> predicted;
    for (SpAttnAlgo algo : autocore.candidates()) {
      predicted.push_back(predict_sp_attention(algo, shape, layout, 1, costs));
    }
    const SpAttnAlgo pick = autocore.candidates()[cheapest(predicted)];
    std::printf(
        "{\"kind\": \"whatif\", \"P\": %d, \"T\": %lld, \"beta_scale\": %.0f, "
        "\"pick\": \"%s\"}\n",
        group.size(), static_cast<long long>(seq), scale, sp_attn_name(pick));
  }
}

void bench_softmax(Communicator& group, const Options& o) {
  const int p = group.size();
  std::vector<SoftmaxCore> cores = softmax_cores(group, o);
  const auto& autocore = dynamic_cast<const AutoSpAttention&>(*cores.back().core);
  const SpCostParams& costs = autocore.costs();
  if (group.rank() == 0) {
    std::printf(
        "{\"kind\": \"costs\", \"P\": %d, \"alpha\": %.3e, \"beta\": %.3e, \"gamma\": %.3e}\n", p,
        costs.alpha, costs.beta, costs.gamma);
  }
  for (int64_t seq : o.seq) {
    const int64_t c = seq / p;
    const uint64_t seed = 100 + group.rank();
    const Tensor q = random_tensor({o.batch, c, o.heads, o.dim}, seed);
    const Tensor k = random_tensor({o.batch, c, o.kv_heads, o.dim}, seed + 1);
    const Tensor v = random_tensor({o.batch, c, o.kv_heads, o.dim}, seed + 2);
    const Tensor dout = random_tensor({o.batch, c, o.heads, o.dim}, seed + 3);
    const SpAttnShape shape{.batch = o.batch,
                            .tokens = c,
                            .heads = o.heads,
                            .kv_heads = o.kv_heads,
                            .dim = o.dim,
                            .ranks = p};
    std::vector<Step> steps;
    for (SoftmaxCore& sc : cores) {
      steps.push_back([&] {
        std::unique_ptr<SpAttentionSaved> saved;
        const Tensor out = sc.core->forward(q, k, v, &saved);
        Tensor dq, dk, dv;
        sc.core->backward(*saved, dout, dq, dk, dv);
      });
    }
    print_what_if(group, autocore, shape, cores.back().options.layout, seq);
    const std::vector<Measured> measured = measure(group, o.repeats, steps);
    for (size_t j = 0; j < cores.size(); ++j) {
      const SoftmaxCore& sc = cores[j];
      const bool is_auto = sc.options.algo == SpAttnAlgo::kAuto;
      const SpCost predicted = is_auto
                                   ? SpCost{}
                                   : predict_sp_attention(sc.options.algo, shape, sc.options.layout,
                                                          sc.options.ulysses, costs);
      print_line(group, "softmax", sc.label, sc.label == "usp" ? "zigzag-ring" : "zigzag", seq,
                 measured[j], is_auto ? nullptr : &predicted,
                 is_auto ? sp_attn_name(autocore.last_choice()) : "");
    }
  }
}

// ---- linear cores ---------------------------------------------------------------------------

void bench_linear(Communicator& group, const Options& o) {
  const int p = group.size();
  std::vector<float> gamma(o.heads);
  for (int64_t h = 0; h < o.heads; ++h) gamma[h] = 1.0f - std::pow(2.0f, -5.0f - h);
  const float scale = 1.0f / std::sqrt(static_cast<float>(o.dim));
  for (const SpLayout layout : {SpLayout{p, 1}, SpLayout{p, p}}) {
    const std::string layout_name = layout.contiguous() ? "contiguous" : "zigzag";
    std::vector<std::pair<SpLinearAlgo, std::unique_ptr<SequenceParallelLinearAttention>>> cores;
    for (SpLinearAlgo algo : {SpLinearAlgo::kLasp2, SpLinearAlgo::kZeco, SpLinearAlgo::kAuto}) {
      auto made = make_sp_linear_attention(group, {.algo = algo, .layout = layout});
      WEFT_CHECK(made.ok()) << made.status().ToString();
      cores.emplace_back(algo, std::move(*made));
    }
    const auto& autocore = dynamic_cast<const AutoSpLinearAttention&>(*cores.back().second);
    for (int64_t seq : o.seq) {
      const int64_t c = seq / p;
      const uint64_t seed = 200 + group.rank();
      const Tensor q = random_tensor({o.batch, c, o.heads, o.dim}, seed, -0.5f, 0.5f);
      const Tensor k = random_tensor({o.batch, c, o.kv_heads, o.dim}, seed + 1, -0.5f, 0.5f);
      const Tensor v = random_tensor({o.batch, c, o.kv_heads, o.dim}, seed + 2, -0.5f, 0.5f);
      const Tensor dout = random_tensor({o.batch, c, o.heads, o.dim}, seed + 3, -0.5f, 0.5f);
      const SpLinearShape shape{
          .batch = o.batch, .tokens = c, .heads = o.heads, .dim = o.dim, .ranks = p};
      std::vector<Step> steps;
      for (auto& entry : cores) {
        SequenceParallelLinearAttention& core = *entry.second;
        steps.push_back([&] {
          std::unique_ptr<SpLinearSaved> saved;
          const Tensor out = core.forward(q, k, v, gamma, scale, &saved);
          Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()),
                 dv = Tensor::empty(v.shape());
          core.backward(*saved, dout, dq, dk, dv);
        });
      }
      const std::vector<Measured> measured = measure(group, o.repeats, steps);
      for (size_t j = 0; j < cores.size(); ++j) {
        const SpLinearAlgo algo = cores[j].first;
        const bool is_auto = algo == SpLinearAlgo::kAuto;
        const SpCost predicted =
            is_auto ? SpCost{}
                    : predict_sp_linear(algo, shape, layout, SpLinearOptions{}.scan_blocks,
                                        autocore.costs());
        print_line(group, "linear", sp_linear_name(algo), layout_name, seq, measured[j],
                   is_auto ? nullptr : &predicted,
                   is_auto ? sp_linear_name(autocore.last_choice()) : "");
      }
    }
  }
}

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  for (const std::string& part : std::vector<std::string>(absl::StrSplit(text, ','))) {
    int64_t v = 0;
    WEFT_CHECK(absl::SimpleAtoi(part, &v) && v > 0) << "bad number '" << part << "' in " << text;
    out.push_back(v);
  }
  return out;
}

Options parse_options(int argc, char** argv) {
  Options o;
  const std::map<std::string, int64_t*> numbers = {{"--batch", &o.batch},
                                                   {"--heads", &o.heads},
                                                   {"--kv-heads", &o.kv_heads},
                                                   {"--dim", &o.dim},
                                                   {"--repeats", &o.repeats}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--seq") {
      o.seq = parse_list(value);
      continue;
    }
    const auto it = numbers.find(flag);
    WEFT_CHECK(it != numbers.end()) << "unknown flag " << flag;
    *it->second = parse_list(value).front();
  }
  return o;
}

}  // namespace
}  // namespace weft::parallel

int main(int argc, char** argv) {
  weft::comm::MpiRuntime mpi(&argc, &argv);
  weft::kernels::set_cpu_threads(weft::kernels::default_cpu_threads(mpi.world_size()));
  const weft::parallel::Options options = weft::parallel::parse_options(argc, argv);
  // usp's Ulysses and ring groups are split_within the group: its stats include their traffic.
  auto group = weft::comm::mpi_world_communicator("sp");
  weft::parallel::bench_softmax(*group, options);
  weft::parallel::bench_linear(*group, options);
  return 0;
}
