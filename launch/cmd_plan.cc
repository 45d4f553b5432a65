// weft plan --model DIR --ranks N --seq-len T [--global-batch B] [--memory M] [--mesh SPEC ...]
// The mesh and memory savers the cost model of runtime/train/planner.h picks for training the
// model on N ranks, with predicted step time and per-rank memory (docs/planner.md). With --mesh
// (and --micro-batch, --recompute, --zero, --sequence-parallel) it predicts that one layout.
// --json prints one JSON object per layout instead of the table. Runs on one process.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "launch/commands.h"
#include "launch/engine_setup.h"
#include "launch/flags.h"
#include "nlohmann/json.hpp"
#include "runtime/core/status.h"
#include "runtime/train/planner.h"

namespace weft::cli {
namespace {

using nlohmann::json;

std::string mib(int64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

std::string mesh_text(const train::Layout& l) {
  std::string out = absl::StrCat("tp=", l.tp, ",pp=", l.pp, ",sp=", l.sp, ",dp=", l.dp);
  if (l.ep > 1) absl::StrAppend(&out, ",ep=", l.ep);
  return out;
}

json to_json(const train::Prediction& p, int64_t seq_len) {
  const train::Layout& l = p.layout;
  return json{{"mesh", mesh_text(l)},
              {"tp", l.tp},
              {"pp", l.pp},
              {"sp", l.sp},
              {"dp", l.dp},
              {"ep", l.ep},
              {"sequence_parallel", l.sequence_parallel},
              {"micro_batch", l.micro_batch},
              {"saver", l.recompute},
              {"zero1", l.zero1},
              {"weight_bytes", p.weight_bytes},
              {"optimizer_bytes", p.optimizer_bytes},
              {"activation_bytes", p.activation_bytes},
              {"peak_bytes", p.peak_bytes},
              {"compute_s", p.compute_s},
              {"comm_s", p.comm_s},
              {"step_s", p.step_s},
              {"tokens_per_s", p.tokens_per_s},
              {"fits", p.fits},
              {"flags", l.flags(seq_len)}};
}

}  // namespace

absl::Status run_plan(Session& session, const Args& args) {
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(
          session, "plan", "the mesh and memory savers to train a model with, from a cost model",
          args,
          {{"model", FlagKind::kString, "Hugging Face model directory (config.json)", true},
           {"ranks", FlagKind::kInt, "ranks to train on", true, 1},
           {"seq-len", FlagKind::kInt, "tokens per sequence", true, 2},
           {"global-batch", FlagKind::kInt, "sequences per step (default: --ranks)", false, 1},
           {"memory", FlagKind::kString, "memory per rank, e.g. 800MiB or 80GB"},
           {"mesh", FlagKind::kString,
            "predict this layout only: tp=2,pp=1,sp=1 (dp: the rest), with the flags "
            "below"},
           {"micro-batch", FlagKind::kInt, "with --mesh: sequences per micro-batch", false, 1},
           {"recompute", FlagKind::kString,
            "with --mesh: none (default), selective, full or streambp"},
           {"zero", FlagKind::kInt, "with --mesh: 1 for ZeRO-1"},
           {"sequence-parallel", FlagKind::kBool, "with --mesh: Megatron-SP"},
           {"top", FlagKind::kInt, "layouts to list (default 10)", false, 1},
           {"json", FlagKind::kBool, "one JSON object per layout"},
           {"cores", FlagKind::kInt, "cores per node (default: this machine's)", false, 1},
           {"ranks-per-node", FlagKind::kInt, "ranks per node (default: all on one)", false, 1},
           {"flops-per-core", FlagKind::kFloat,
            "f32 GEMM flop/s of one core (default: measured here)"},
           {"efficiency", FlagKind::kFloat,
            "share of the GEMM speed a single-threaded rank's training step achieves (default "
            "0.75)"},
           {"serial-share", FlagKind::kFloat,
            "share of a step that more threads per rank do not speed up (default 0.5)"},
           {"latency-us", FlagKind::kFloat,
            "seconds x 1e6 per dependent communication call (default 100)"},
           {"link-gbps", FlagKind::kFloat,
            "GB/s one rank sends (default 2, shared-memory MPI on this class of machine)"}}));
  if (!session.is_root()) return absl::OkStatus();
  train::PlanRequest request;
  WEFT_ASSIGN_OR_RETURN(request.model, io::load_model_config(flags.str("model")));
  request.ranks = static_cast<int>(flags.integer("ranks"));
  request.seq_len = flags.integer("seq-len");
  request.global_batch = flags.integer("global-batch", request.ranks);
  if (flags.has("memory")) {
    WEFT_ASSIGN_OR_RETURN(request.memory_bytes, parse_bytes("memory", flags.str("memory")));
  }
  if (request.seq_len > request.model.max_position_embeddings) {
    return invalid_argument("--seq-len ", request.seq_len,
                            " exceeds the model's max_position_embeddings ",
                            request.model.max_position_embeddings);
  }
  train::MachineModel machine;
  machine.cores =
      static_cast<int>(flags.integer("cores", std::max(1u, std::thread::hardware_concurrency())));
  machine.ranks_per_node = static_cast<int>(flags.integer("ranks-per-node", 0));
  const bool measured = !flags.has("flops-per-core");
  machine.flops_per_core = measured ? train::measure_core_flops() : flags.number("flops-per-core");
  machine.efficiency = flags.number("efficiency", 0.75);
  machine.serial_share = flags.number("serial-share", 0.5);
  if (!(machine.serial_share >= 0 && machine.serial_share <= 1)) {
    return invalid_argument("--serial-share must be in [0, 1]");
  }
  machine.latency_s = flags.number("latency-us", 100) * 1e-6;
  machine.bytes_per_s = flags.number("link-gbps", 2) * 1e9;
  for (auto [value, name] : {std::pair{machine.flops_per_core, "--flops-per-core"},
                             {machine.efficiency, "--efficiency"},
                             {machine.latency_s, "--latency-us"},
                             {machine.bytes_per_s, "--link-gbps"}}) {
    if (!(value > 0)) return invalid_argument(name, " must be > 0");
  }

  std::vector<train::Prediction> predictions;
  if (flags.has("mesh")) {
    WEFT_ASSIGN_OR_RETURN(train::Layout layout,
                          train::parse_layout(flags.str("mesh"), request.ranks));
    layout.micro_batch = flags.integer("micro-batch", 0);
    layout.recompute = flags.str("recompute", "none");
    layout.zero1 = flags.integer("zero", 0) == 1;
    layout.sequence_parallel = flags.boolean("sequence-parallel");
    WEFT_ASSIGN_OR_RETURN(train::Prediction p, train::predict(request, machine, layout));
    predictions.push_back(p);
  } else {
    WEFT_ASSIGN_OR_RETURN(predictions, train::plan(request, machine));
  }
  if (flags.boolean("json")) {
    for (const train::Prediction& p : predictions) {
      std::printf("%s\n", to_json(p, request.seq_len).dump().c_str());
    }
    return absl::OkStatus();
  }
  const io::ModelConfig& c = request.model;
  std::printf(
      "weft plan: %s, %lld layers, hidden %lld, vocab %lld%s; %d ranks, sequences of %lld, "
      "global batch %lld%s\n",
      c.architecture.c_str(), static_cast<long long>(c.num_hidden_layers),
      static_cast<long long>(c.hidden_size), static_cast<long long>(c.vocab_size),
      c.is_moe() ? absl::StrCat(", ", c.num_local_experts, " experts").c_str() : "", request.ranks,
      static_cast<long long>(request.seq_len), static_cast<long long>(request.global_batch),
      request.memory_bytes > 0 ? absl::StrCat(", ", mib(request.memory_bytes), " per rank").c_str()
                               : "");
  std::printf(
      "machine: %d cores per node, %.2f GFLOP/s per core (%s) at %.0f%% in a training step, %.0f "
      "us per call, %.1f GB/s\n",
      machine.cores, machine.flops_per_core / 1e9, measured ? "measured" : "given",
      machine.efficiency * 100, machine.latency_s * 1e6, machine.bytes_per_s / 1e9);
  int fitting = 0;
  for (const train::Prediction& p : predictions) fitting += p.fits ? 1 : 0;
  const size_t top = static_cast<size_t>(flags.integer("top", 10));
  std::printf("%-28s %-9s %-5s %-5s %-3s %12s %10s %12s  %s\n", "mesh", "saver", "zero", "micro",
              "sp", "memory/rank", "step", "tokens/s", "fits");
  for (size_t i = 0; i < predictions.size() && i < top; ++i) {
    const train::Prediction& p = predictions[i];
    const train::Layout& l = p.layout;
    std::printf("%-28s %-9s %-5s %-5s %-3s %12s %9.3fs %12.0f  %s\n", mesh_text(l).c_str(),
                l.recompute.c_str(), l.zero1 ? "yes" : "no",
                l.micro_batch > 0 ? std::to_string(l.micro_batch).c_str() : "all",
                l.sequence_parallel ? "yes" : "no", mib(p.peak_bytes).c_str(), p.step_s,
                p.tokens_per_s, p.fits ? "yes" : "no");
  }
  if (fitting == 0) {
    return invalid_argument(
        "no layout of ", request.ranks, " ranks fits ", mib(request.memory_bytes),
        " per rank: the smallest needs ", mib(predictions.front().peak_bytes), " (",
        mesh_text(predictions.front().layout), ", ", predictions.front().layout.recompute, ")");
  }
  const train::Prediction& best = predictions.front();
  std::printf(
      "%d of %zu layouts fit. pick: %s, predicted %.3f s per step, %s per rank (weights and "
      "grads %s, AdamW %s, activations %s)\n",
      fitting, predictions.size(), best.layout.flags(request.seq_len).c_str(), best.step_s,
      mib(best.peak_bytes).c_str(), mib(best.weight_bytes).c_str(),
      mib(best.optimizer_bytes).c_str(), mib(best.activation_bytes).c_str());
  return absl::OkStatus();
}

}  // namespace weft::cli
