// weft train --model DIR --data FILE|DIR --steps N --global-batch B --seq-len T --lr X
//            --weight-decay W [--save CKPT] [--load CKPT [--load-fallback]] [--metrics M.jsonl]
//            [--config run.pbtxt]
// Flags override the --config file, field by field. Exit codes: 0 done (also when a checkpoint
// already reached --steps), 1 an error, 75 (train::kExitStopped) stopped by SIGTERM/SIGUSR1
// after saving a checkpoint.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "comm/report.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "runtime/core/status.h"
#include "runtime/io/run_config.h"
#include "runtime/train/trainer.h"

namespace weft::cli {
namespace {

const std::vector<FlagSpec>& train_flags() {
  static const std::vector<FlagSpec> specs = {
      {"config", FlagKind::kString, "run settings in protobuf text format (RunConfig)"},
      {"model", FlagKind::kString, "Hugging Face model directory"},
      {"init-random", FlagKind::kBool, "initialise weights from --seed (model dir: config only)"},
      {"data", FlagKind::kString,
       "token file (one sequence per line, read in order) or a directory of `weft data prepare` "
       "(shuffled samples of --seq-len)"},
      {"data-seed", FlagKind::kInt,
       "--data DIR: the seed of the sample order, reshuffled each epoch (default --seed)", false,
       0},
      {"steps", FlagKind::kInt, "the step to stop at", false, 1},
      {"eval-data", FlagKind::kString,
       "validation data, reported as eval_loss: a token file (same line length) or a `weft data "
       "prepare` directory (its windows in a fixed order)"},
      {"eval-every", FlagKind::kInt, "evaluate after every N-th step (default: the last only)",
       false, 1},
      {"eval-batches", FlagKind::kInt,
       "global batches per evaluation (default: every whole batch of --eval-data)", false, 1},
      {"global-batch", FlagKind::kInt, "sequences per step over all ranks", false, 1},
      {"seq-len", FlagKind::kInt,
       "tokens per sequence (a token file's line length; a data directory's sample length)", false,
       2},
      {"lr", FlagKind::kFloat, "peak learning rate (default 1e-3)"},
      {"lr-schedule", FlagKind::kString,
       "constant (default), linear or cosine decay from --lr to --min-lr after the warmup"},
      {"warmup-steps", FlagKind::kInt, "linear warmup from 0 over the first N steps", false, 0},
      {"min-lr", FlagKind::kFloat, "the decay's floor (default 0)"},
      {"lr-decay-steps", FlagKind::kInt,
       "the step where the decay reaches --min-lr (default --steps; give it to a run that stops "
       "early and resumes)",
       false, 1},
      {"skip-nonfinite", FlagKind::kBool,
       "skip a step whose loss or gradient norm is not finite (default: stop the run)"},
      {"weight-decay", FlagKind::kFloat, "AdamW weight decay (matrices only)"},
      {"beta1", FlagKind::kFloat, "AdamW beta1 (default 0.9)"},
      {"beta2", FlagKind::kFloat, "AdamW beta2 (default 0.95)"},
      {"eps", FlagKind::kFloat, "AdamW epsilon (default 1e-8)"},
      {"clip-grad", FlagKind::kFloat, "clip the global gradient norm to X"},
      {"save", FlagKind::kString, "checkpoint directory to write"},
      {"save-every", FlagKind::kInt, "also save every N steps", false, 1},
      {"keep-last", FlagKind::kInt, "keep only the newest N complete checkpoints (default: all)",
       false, 1},
      {"sync-save", FlagKind::kBool,
       "wait for each checkpoint to be written (default: written in the background)"},
      {"load", FlagKind::kString, "checkpoint directory to resume from (its newest checkpoint)"},
      {"load-fallback", FlagKind::kBool,
       "when the newest checkpoint under --load is damaged, resume from the newest older one "
       "that loads (default: refuse)"},
      {"metrics", FlagKind::kString, "JSON lines, one per step"},
      {"log-every", FlagKind::kInt, "print a progress line every N steps (default 1)", false, 1},
      {"seed", FlagKind::kInt, "seed for --init-random (default 0)"},
      {"comm-report", FlagKind::kString, "write per-rank traffic counters (JSON)"},
      {"zero", FlagKind::kInt, "1: shard the AdamW state over data-parallel ranks (ZeRO-1)"},
      {"sync-grad-reduce", FlagKind::kBool,
       "reduce gradients after the backward (default: overlapped with it)"},
      {"token-weave", FlagKind::kBool,
       "with --tp >= 2: Megatron-SP's layout, each micro-batch's sequences as two halves whose "
       "collectives overlap the other half's compute (needs micro-batches of 2+ sequences)"},
  };
  static const std::vector<FlagSpec> all = [] {
    std::vector<FlagSpec> v = specs;
    for (const FlagSpec& s : model_parallel_flags()) v.push_back(s);
    return v;
  }();
  return all;
}

// Flags that are not RunConfig fields.
bool is_cli_only(const std::string& flag) {
  return flag == "config" || flag == "init-random" || flag == "help" || flag == "comm-timeout" ||
         flag == "precision" || flag == "device" || flag == "gpus-per-node";
}

// RunConfig from --config (if any) with every flag given on the command line laid over it (a
// flag's name is its field's name with dashes).
absl::StatusOr<io::RunConfig> run_config_from(const Flags& flags) {
  io::RunConfig cfg;
  if (flags.has("config")) {
    WEFT_ASSIGN_OR_RETURN(cfg, io::load_run_config(flags.str("config")));
  }
  for (const std::string& flag : flags.given()) {
    if (!is_cli_only(flag))
      WEFT_RETURN_IF_ERROR(io::set_run_config_field(cfg, flag, flags.str(flag)));
  }
  return cfg;
}

absl::StatusOr<train::TrainOptions> options_from(const io::RunConfig& cfg, bool init_random) {
  for (auto [missing, name] :
       {std::pair{cfg.data().empty(), "--data"}, std::pair{!cfg.has_steps(), "--steps"},
        std::pair{!cfg.has_global_batch(), "--global-batch"},
        std::pair{!cfg.has_seq_len(), "--seq-len"}}) {
    if (missing) {
      return invalid_argument("missing required flag ", name, " (or its --config field)");
    }
  }
  const io::ParallelConfig& par = cfg.parallel();
  // In a --config file a degree of 0 is proto3's "unset" (default 1); a negative one is an error
  // (a flag on the command line is checked when parsed).
  for (auto [value, name] : {std::pair{int64_t{par.tp()}, "tp"},
                             {par.pp(), "pp"},
                             {par.sp(), "sp"},
                             {par.pp_virtual(), "pp_virtual"},
                             {par.micro_batch(), "micro_batch"},
                             {par.sp_ulysses(), "sp_ulysses"},
                             {par.ep(), "ep"},
                             {par.etp(), "etp"}}) {
    if (value < 0) return invalid_argument("parallel.", name, " ", value, " must be >= 1");
  }
  for (auto [value, name] : {std::pair{cfg.lr(), "--lr"},
                             {cfg.weight_decay(), "--weight-decay"},
                             {cfg.beta1(), "--beta1"},
                             {cfg.beta2(), "--beta2"},
                             {cfg.eps(), "--eps"},
                             {cfg.clip_grad(), "--clip-grad"}}) {
    if (!std::isfinite(value)) return invalid_argument(name, " ", value, " is not a finite number");
  }
  train::TrainOptions o;
  o.model_dir = cfg.model();
  o.init_random = init_random;
  o.data_path = cfg.data();
  std::error_code ec;
  if (cfg.has_data_seed() && !std::filesystem::is_directory(o.data_path, ec)) {
    return invalid_argument("--data-seed applies to a data directory of `weft data prepare`; ",
                            o.data_path, " is a token file, read in file order");
  }
  o.data_seed = cfg.has_data_seed() ? cfg.data_seed() : cfg.seed();
  o.eval_data_path = cfg.eval_data();
  if (cfg.eval_every() < 0 || cfg.eval_batches() < 0) {
    return invalid_argument("eval_every and eval_batches must be >= 1");
  }
  o.eval_every = cfg.eval_every();
  o.eval_batches = cfg.eval_batches();
  o.steps = cfg.steps();
  o.global_batch = cfg.global_batch();
  o.seq_len = cfg.seq_len();
  if (cfg.has_lr()) o.adamw.lr = static_cast<float>(cfg.lr());
  o.adamw.weight_decay = static_cast<float>(cfg.weight_decay());
  if (cfg.has_beta1()) o.adamw.beta1 = static_cast<float>(cfg.beta1());
  if (cfg.has_beta2()) o.adamw.beta2 = static_cast<float>(cfg.beta2());
  if (cfg.has_eps()) o.adamw.eps = static_cast<float>(cfg.eps());
  o.clip_grad = cfg.clip_grad();
  WEFT_ASSIGN_OR_RETURN(o.lr_decay, train::parse_lr_decay(cfg.lr_schedule()));
  o.warmup_steps = cfg.warmup_steps();
  o.min_lr = cfg.min_lr();
  o.lr_decay_steps = cfg.lr_decay_steps();
  o.skip_nonfinite = cfg.skip_nonfinite();
  o.save_dir = cfg.save();
  o.load_dir = cfg.load();
  o.load_fallback = cfg.load_fallback();
  o.save_every = cfg.save_every();
  o.keep_last = cfg.keep_last();
  o.sync_save = cfg.sync_save();
  o.metrics_path = cfg.metrics();
  o.log_every = cfg.has_log_every() ? cfg.log_every() : 1;
  o.seed = cfg.seed();
  o.tp = par.tp() > 0 ? par.tp() : 1;
  o.pp = par.pp() > 0 ? par.pp() : 1;
  o.pp_virtual = par.pp_virtual() > 0 ? par.pp_virtual() : 1;
  o.micro_batch = par.micro_batch();
  o.sequence_parallel = par.sequence_parallel();
  o.token_weave = par.token_weave();
  if (par.zero() != 0 && par.zero() != 1) {
    return invalid_argument("--zero ", par.zero(), " is not supported (0 or 1)");
  }
  o.zero1 = par.zero() == 1;
  o.overlap_grad_reduce = !par.sync_grad_reduce();
  o.sp = par.sp() > 0 ? par.sp() : 1;
  WEFT_ASSIGN_OR_RETURN(const SpChoice sp,
                        parse_sp_choice(par.sp_attn(), par.sp_linear(), par.sp_ulysses()));
  o.sp_attn = sp.attn;
  o.sp_linear = sp.linear;
  o.sp_ulysses = sp.ulysses;
  o.ep = par.ep() > 0 ? par.ep() : 1;
  o.etp = par.etp() > 0 ? par.etp() : 1;
  if (!(par.moe_capacity_factor() >= 0) || !std::isfinite(par.moe_capacity_factor())) {
    return invalid_argument("--moe-capacity-factor ", par.moe_capacity_factor(),
                            " must be a finite number >= 0");
  }
  o.moe_capacity_factor = par.moe_capacity_factor();
  if (!(par.moe_aux_loss_coef() >= 0) || !std::isfinite(par.moe_aux_loss_coef())) {
    return invalid_argument("--moe-aux-loss-coef ", par.moe_aux_loss_coef(),
                            " must be a finite number >= 0");
  }
  o.moe_aux_loss_coef = par.moe_aux_loss_coef();
  WEFT_ASSIGN_OR_RETURN(o.recompute, models::parse_recompute(par.recompute()));
  if (par.streambp() < 0) return invalid_argument("--streambp ", par.streambp(), " must be >= 1");
  o.streambp = par.streambp();
  if (par.seco() < 0) return invalid_argument("--seco ", par.seco(), " must be >= 1");
  if (par.spaco_keep() < 0)
    return invalid_argument("--spaco-keep ", par.spaco_keep(), " must be >= 1");
  o.seco = par.seco();
  o.spaco_keep = par.spaco_keep();
  if (o.seco > 0 && o.moe_aux_loss_coef > 0) return seco_refuses_aux_loss();
  WEFT_ASSIGN_OR_RETURN(const MoePlacement moe,
                        moe_placement(cfg.model(), par.speculative_moe(), o.ep));
  o.expert_placement = moe.placement;
  o.speculative_moe = moe.speculative;
  if (o.model_dir.empty() && o.load_dir.empty()) {
    return invalid_argument("missing required flag --model (or --load)");
  }
  return o;
}

}  // namespace

absl::Status seco_refuses_aux_loss() {
  return absl::InvalidArgumentError(
      "--seco with --moe-aux-loss-coef: SeCO's forward routes one chunk of the micro-batch at a "
      "time, and the load-balancing loss needs the routing of all of it; use --streambp");
}

absl::Status run_train(Session& session, const Args& args) {
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(session, "train", "train with AdamW over a mesh of the ranks (dp x pp x sp x tp)",
                  args, train_flags()));
  absl::StatusOr<io::RunConfig> cfg = run_config_from(flags);
  WEFT_RETURN_IF_ERROR(session.agree(cfg.status()));
  absl::StatusOr<train::TrainOptions> options = options_from(*cfg, flags.boolean("init-random"));
  WEFT_RETURN_IF_ERROR(session.agree(options.status()));

  auto agree = [&](absl::Status s) { return session.agree(std::move(s)); };
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer,
                        train::Trainer::create(*options, session.compute_world(), agree));
  WEFT_RETURN_IF_ERROR(trainer->run());
  if (!cfg->comm_report().empty()) {
    WEFT_RETURN_IF_ERROR(session.agree(comm::write_comm_report(
        session.world(), trainer->mesh().all_groups(), cfg->comm_report())));
  }
  return absl::OkStatus();
}

}  // namespace weft::cli
