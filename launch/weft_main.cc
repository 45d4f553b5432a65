// weft: one binary, one process per rank. `mpirun -np N build/weft SUBCOMMAND [flags]`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"
#include "kernels/ops.h"
#include "kernels/threads.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "runtime/core/device_select.h"
#include "runtime/core/exit_code.h"
#include "runtime/core/logging.h"
#include "runtime/core/status.h"

namespace weft::cli {
namespace {

constexpr char kHelpShown[] = "weft.help_shown";
// --comm-timeout's default: long enough for a slow checkpoint or model load on one rank while
// the others wait (NCCL's and PyTorch's default is 10 minutes).
constexpr double kDefaultCommTimeout = 300;
// Below this a heartbeat delayed by a busy node would read as a dead rank.
constexpr double kMinCommTimeout = 1;

using Command = absl::Status (*)(Session&, const Args&);

const std::map<std::string, std::pair<Command, const char*>>& commands() {
  static const std::map<std::string, std::pair<Command, const char*>> table = {
      {"eval", {run_eval, "logits, loss and (with --grads) every gradient of a batch"}},
      {"generate", {run_generate, "continue prompts through the serving engine"}},
      {"serve", {run_serve, "serve a model over an OpenAI-compatible HTTP API"}},
      {"train", {run_train, "train with AdamW; metrics, checkpoints, resume"}},
      {"ckpt", {run_ckpt, "checkpoint tools: inspect, verify, export, reshard"}},
      {"tokenize", {run_tokenize, "JSON strings to token ids (or --decode ids to strings)"}},
      {"data",
       {run_data, "token data for train --data DIR: prepare (tokenize JSON lines), verify, info"}},
      {"moe", {run_moe, "MoE tools: profile (expert placement for --speculative-moe)"}},
      {"plan", {run_plan, "the mesh and memory savers a cost model picks, with predictions"}},
  };
  return table;
}

std::string main_usage() {
  std::string out =
      "usage: [mpirun -np N] weft SUBCOMMAND [flags]   (weft SUBCOMMAND --help for its flags)\n";
  for (const auto& [name, entry] : commands()) {
    absl::StrAppend(&out, "  ", name, std::string(10 - name.size(), ' '), entry.second, "\n");
  }
  return out;
}

int local_ranks() {
  const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return env ? std::max(1, std::atoi(env)) : 1;
}

}  // namespace

absl::StatusOr<Flags> parse_flags(Session& session, const std::string& subcommand,
                                  const std::string& summary, const Args& args,
                                  std::vector<FlagSpec> specs) {
  specs.push_back({"help", FlagKind::kBool, "print this help"});
  specs.push_back({"comm-timeout", FlagKind::kFloat,
                   "seconds a rank may wait in a collective, or go silent, before the job ends "
                   "naming the rank and the collective (default 300 or $WEFT_COMM_TIMEOUT; 0: "
                   "never)"});
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      if (session.is_root()) std::fputs(usage(subcommand, summary, specs).c_str(), stdout);
      absl::Status help = absl::CancelledError("help");
      help.SetPayload(kHelpShown, absl::Cord("1"));
      return help;
    }
  }
  absl::StatusOr<Flags> flags = Flags::parse(args, specs);
  if (!flags.ok()) {
    // Every rank parsed the same words: agree() lets rank 0 alone print the message.
    return session.agree(absl::InvalidArgumentError(absl::StrCat(
        std::string(flags.status().message()), " (see weft ", subcommand, " --help)")));
  }
  double timeout_s = kDefaultCommTimeout;
  if (flags->has("comm-timeout")) {
    timeout_s = flags->number("comm-timeout");
  } else if (const char* env = std::getenv("WEFT_COMM_TIMEOUT"); env != nullptr) {
    if (!absl::SimpleAtod(env, &timeout_s) || !std::isfinite(timeout_s)) timeout_s = -1;
  }
  absl::Status valid;
  if (timeout_s != 0 && !(timeout_s >= kMinCommTimeout)) {
    valid = absl::InvalidArgumentError(absl::StrCat(
        "--comm-timeout (or WEFT_COMM_TIMEOUT) must be 0 (off) or a number of seconds >= ",
        kMinCommTimeout, ", got ",
        flags->has("comm-timeout") ? flags->str("comm-timeout")
                                   : std::getenv("WEFT_COMM_TIMEOUT")));
  }
  WEFT_RETURN_IF_ERROR(session.agree(valid));
  // Every rank takes rank 0's value: an environment that differs across nodes (mpirun forwards
  // variables only with -x) must not leave some ranks starting the monitor and others not.
  if (session.size() > 1) {
    Tensor t = Tensor::from_floats({static_cast<float>(timeout_s)}, {1});  // on the host
    session.world().broadcast(t, 0);
    timeout_s = t.item();
  }
  session.watch_health(timeout_s);
  const bool takes_device =
      std::any_of(specs.begin(), specs.end(), [](const FlagSpec& s) { return s.name == "device"; });
  if (takes_device) {
    absl::StatusOr<Device> device = select_device(
        flags->str("device"), static_cast<int>(flags->integer("gpus-per-node", 0)), device_env());
    WEFT_RETURN_IF_ERROR(session.agree(device.status()));
    session.use_device(*device);
  }
  if (flags->has("precision")) {
    const std::string precision = flags->str("precision");
    if (precision != "f32" && precision != "bf16") {
      return session.agree(absl::InvalidArgumentError(
          absl::StrCat("--precision '", precision, "': expected f32 or bf16")));
    }
    kernels::set_bf16_compute(precision == "bf16");
  }
  return flags;
}

bool is_help(const absl::Status& status) { return status.GetPayload(kHelpShown).has_value(); }

std::vector<FlagSpec> device_flags() {
  return {{"device", FlagKind::kString,
           "cpu or cuda (default: $WEFT_DEVICE, else cuda when this build has CUDA and a GPU is "
           "visible): where weights, activations and the KV cache live"},
          {"gpus-per-node", FlagKind::kInt,
           "GPUs each node gives its ranks (default: all visible): local rank r uses GPU r % N",
           false, 1}};
}

std::vector<FlagSpec> model_parallel_flags() {
  std::vector<FlagSpec> specs = device_flags();
  std::vector<FlagSpec> rest = {
      {"tp", FlagKind::kInt, "tensor-parallel degree (default 1)", false, 1},
      {"precision", FlagKind::kString,
       "f32 (default) or bf16: bf16 GEMM inputs and activations, f32 accumulation, f32 master "
       "weights and optimizer state (on CPU an exact emulation that saves no memory)"},
      {"pp", FlagKind::kInt, "pipeline stages (default 1)", false, 1},
      {"pp-virtual", FlagKind::kInt, "interleaved chunks per pipeline rank (default 1)", false, 1},
      {"micro-batch", FlagKind::kInt, "sequences per micro-batch (default: all of a rank's)", false,
       1},
      {"sequence-parallel", FlagKind::kBool, "Megatron sequence parallelism over tp"},
      {"sp", FlagKind::kInt, "sequence-parallel degree: each sequence split over N ranks", false,
       1},
      {"sp-attn", FlagKind::kString,
       "softmax attention under --sp: ring (default), ulysses, usp, allgather, auto"},
      {"sp-linear", FlagKind::kString, "linear attention under --sp: zeco (default), lasp2, auto"},
      {"sp-ulysses", FlagKind::kInt, "usp: Ulysses group size inside the sp group", false, 1},
      {"ep", FlagKind::kInt, "expert-parallel degree: MoE experts split over N ranks of a stage",
       false, 1},
      {"etp", FlagKind::kInt, "expert tensor parallelism: each expert split by features over N",
       false, 1},
      {"moe-capacity-factor", FlagKind::kFloat,
       "per-sequence expert capacity factor F (default: dropless)"},
      {"recompute", FlagKind::kString,
       "activation recomputation: none (default), selective (rerun the attention core in the "
       "backward) or full (keep each layer's input, rerun its forward)"},
      {"streambp", FlagKind::kInt,
       "StreamBP: LM head and loss over CHUNK rows at a time (no [N, vocab] logits kept), and "
       "each layer's backward chunk by chunk of CHUNK positions from its kept input",
       false, 1},
      {"seco", FlagKind::kInt,
       "SeCO: forward and backward of the whole model chunk by chunk of CHUNK positions, each "
       "layer's keys and values kept between them",
       false, 1},
      {"spaco-keep", FlagKind::kInt,
       "SpaCO (with --seco): back-propagate about K of the chunks, drawn from --seed (an "
       "unbiased estimate of the gradient, not the exact one)",
       false, 1},
      {"moe-aux-loss-coef", FlagKind::kFloat,
       "MoE load-balancing loss coefficient (default 0: off); reported apart from the loss"},
      {"speculative-moe", FlagKind::kString,
       "expert placement from `weft moe profile`: co-located experts, one row per destination"}};
  specs.insert(specs.end(), rest.begin(), rest.end());
  return specs;
}

absl::StatusOr<SpChoice> parse_sp_choice(const std::string& attn, const std::string& linear,
                                         int ulysses) {
  SpChoice choice;
  if (!attn.empty()) {
    WEFT_ASSIGN_OR_RETURN(choice.attn, parallel::parse_sp_attn(attn));
  }
  if (!linear.empty()) {
    WEFT_ASSIGN_OR_RETURN(choice.linear, parallel::parse_sp_linear(linear));
  }
  choice.ulysses = ulysses > 0 ? ulysses : 1;
  return choice;
}

// The process's exit code for a subcommand's result, printing the error (once) if there is one.
int exit_code_of(const std::string& sub, Session& session, const absl::Status& status);

int run_main(int argc, char** argv) {
  comm::MpiRuntime mpi(&argc, &argv);
  Session session(comm::mpi_world_communicator("world"));
  if (session.size() > 1) set_log_rank(session.rank());
  kernels::set_cpu_threads(kernels::default_cpu_threads(local_ranks()));

  const std::string sub = argc > 1 ? argv[1] : "";
  if (sub.empty() || sub == "--help" || sub == "-h" || sub == "help") {
    if (session.is_root()) std::fputs(main_usage().c_str(), sub.empty() ? stderr : stdout);
    return sub.empty() ? 1 : 0;
  }
  if (sub == "--version" || sub == "version") {
    if (session.is_root()) {
      std::printf("weft %s (commit %s, %s build)\n", WEFT_VERSION, WEFT_GIT_COMMIT,
                  WEFT_BUILD_KIND);
    }
    return 0;
  }
  auto it = commands().find(sub);
  if (it == commands().end()) {
    if (session.is_root()) {
      std::fprintf(stderr, "weft: error: unknown subcommand '%s'\n%s", sub.c_str(),
                   main_usage().c_str());
    }
    return 1;
  }
  const int code =
      exit_code_of(sub, session, it->second.first(session, Args(argv + 2, argv + argc)));
  session.finish(code);
  if (session.health() != nullptr && !session.health()->lost_ranks().empty()) {
    // A rank was written off (comm/health_monitor.h): operations with it never end, and MPI
    // cannot finalize with them.
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }
  return code;
}

int exit_code_of(const std::string& sub, Session& session, const absl::Status& status) {
  if (status.ok() || is_help(status)) return 0;
  if (const std::optional<int> code = requested_exit_code(status)) {
    // Decided the same on every rank (a stop agreed at a step boundary): rank 0 says why.
    if (session.is_root()) {
      std::fprintf(stderr, "weft %s: %s\n", sub.c_str(), std::string(status.message()).c_str());
      std::fflush(stderr);
    }
    return *code;
  }
  if (!reported_elsewhere(status)) {
    std::fprintf(stderr, "weft %s: error: %s\n", sub.c_str(),
                 std::string(status.message()).c_str());
    std::fflush(stderr);
  }
  return 1;
}

}  // namespace weft::cli

int main(int argc, char** argv) { return weft::cli::run_main(argc, argv); }
