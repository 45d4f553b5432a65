// The `weft` subcommands. Each parses its own flags (launch/flags.h) and returns a Status; main
// prints it (once) and exits 1 on every rank.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "launch/session.h"
#include "parallel/sp_attention.h"
#include "parallel/sp_linear_attention.h"
#include "runtime/io/model_config.h"

namespace weft::cli {

using Args = std::vector<std::string>;

absl::Status run_eval(Session& session, const Args& args);
absl::Status run_generate(Session& session, const Args& args);
absl::Status run_serve(Session& session, const Args& args);
absl::Status run_train(Session& session, const Args& args);
absl::Status run_ckpt(Session& session, const Args& args);
absl::Status run_tokenize(Session& session, const Args& args);
absl::Status run_data(Session& session, const Args& args);
absl::Status run_moe(Session& session, const Args& args);
absl::Status run_plan(Session& session, const Args& args);

// The per-layer expert placement that `weft moe profile` wrote to `path`, checked against the
// model (experts, layers) and the run's --ep; errors name the file and what disagrees.
absl::StatusOr<std::vector<std::vector<int64_t>>> load_expert_placement(
    const std::string& path, const io::ModelConfig& config, int ep);
// --speculative-moe PATH (empty: none) for the model in `model_dir` at --ep `ep`.
struct MoePlacement {
  std::vector<std::vector<int64_t>> placement;
  bool speculative = false;
};
absl::StatusOr<MoePlacement> moe_placement(const std::string& model_dir, const std::string& path,
                                           int ep);

// --seco with --moe-aux-loss-coef: the error both commands give (SeCO's forward sees one chunk of
// the micro-batch at a time; the load-balancing loss needs all of its routing).
absl::Status seco_refuses_aux_loss();

// Parses flags; `--help` prints the usage and returns a status marked as "help shown" (exit 0).
absl::StatusOr<class Flags> parse_flags(Session& session, const std::string& subcommand,
                                        const std::string& summary, const Args& args,
                                        std::vector<struct FlagSpec> specs);
bool is_help(const absl::Status& status);

// --device and --gpus-per-node (runtime/core/device_select.h): parse_flags() resolves them and
// calls Session::use_device() for every command that declares them.
std::vector<struct FlagSpec> device_flags();

// --device, --gpus-per-node, --tp, --pp, --pp-virtual, --micro-batch, --sequence-parallel, --sp, --sp-attn, --sp-linear,
// --sp-ulysses: shared by eval and train.
std::vector<struct FlagSpec> model_parallel_flags();

// The sequence-parallel algorithms named by --sp-attn / --sp-linear (empty: ring, zeco) and
// --sp-ulysses (0: 1). Errors name the flag and the choices.
struct SpChoice {
  parallel::SpAttnAlgo attn = parallel::SpAttnAlgo::kRing;
  parallel::SpLinearAlgo linear = parallel::SpLinearAlgo::kZeco;
  int ulysses = 1;
};
absl::StatusOr<SpChoice> parse_sp_choice(const std::string& attn, const std::string& linear,
                                         int ulysses);

}  // namespace weft::cli
