// weft train --model DIR --data FILE --steps N --global-batch B --seq-len T --lr X
//            --weight-decay W [--save CKPT] [--load CKPT] [--metrics M.jsonl] [--config run.pbtxt]
// Flags override the --config file, field by field.
#include <cstdio>

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
      {"data", FlagKind::kString, "token file: one sequence per line"},
      {"steps", FlagKind::kInt, "the step to stop at"},
      {"global-batch", FlagKind::kInt, "sequences per step over all ranks"},
      {"seq-len", FlagKind::kInt, "tokens per sequence (the token file's line length)"},
      {"lr", FlagKind::kFloat, "learning rate (constant)"},
      {"weight-decay", FlagKind::kFloat, "AdamW weight decay (matrices only)"},
      {"beta1", FlagKind::kFloat, "AdamW beta1 (default 0.9)"},
      {"beta2", FlagKind::kFloat, "AdamW beta2 (default 0.95)"},
      {"eps", FlagKind::kFloat, "AdamW epsilon (default 1e-8)"},
      {"clip-grad", FlagKind::kFloat, "clip the global gradient norm to X"},
      {"save", FlagKind::kString, "checkpoint directory to write"},
      {"save-every", FlagKind::kInt, "also save every N steps"},
      {"load", FlagKind::kString, "checkpoint directory to resume from"},
      {"metrics", FlagKind::kString, "JSON lines, one per step"},
      {"log-every", FlagKind::kInt, "print a progress line every N steps (default 1)"},
      {"seed", FlagKind::kInt, "seed for --init-random (default 0)"},
      {"comm-report", FlagKind::kString, "write per-rank traffic counters (JSON)"},
  };
  return specs;
}

// RunConfig from --config (if any) with every flag given on the command line applied over it.
absl::StatusOr<io::RunConfig> run_config_from(const Flags& flags) {
  io::RunConfig cfg;
  if (flags.has("config")) {
    WEFT_ASSIGN_OR_RETURN(cfg, io::load_run_config(flags.str("config")));
  }
  auto set_str = [&](const char* flag, void (io::RunConfig::*setter)(const std::string&)) {
    if (flags.has(flag)) (cfg.*setter)(flags.str(flag));
  };
  auto set_int = [&](const char* flag, auto setter) {
    if (flags.has(flag)) (cfg.*setter)(flags.integer(flag));
  };
  auto set_num = [&](const char* flag, void (io::RunConfig::*setter)(double)) {
    if (flags.has(flag)) (cfg.*setter)(flags.number(flag));
  };
  set_str("model", &io::RunConfig::set_model);
  set_str("data", &io::RunConfig::set_data);
  set_str("save", &io::RunConfig::set_save);
  set_str("load", &io::RunConfig::set_load);
  set_str("metrics", &io::RunConfig::set_metrics);
  set_str("comm-report", &io::RunConfig::set_comm_report);
  set_int("steps", &io::RunConfig::set_steps);
  set_int("global-batch", &io::RunConfig::set_global_batch);
  set_int("seq-len", &io::RunConfig::set_seq_len);
  set_int("save-every", &io::RunConfig::set_save_every);
  set_int("log-every", &io::RunConfig::set_log_every);
  set_int("seed", &io::RunConfig::set_seed);
  set_num("lr", &io::RunConfig::set_lr);
  set_num("weight-decay", &io::RunConfig::set_weight_decay);
  set_num("beta1", &io::RunConfig::set_beta1);
  set_num("beta2", &io::RunConfig::set_beta2);
  set_num("eps", &io::RunConfig::set_eps);
  set_num("clip-grad", &io::RunConfig::set_clip_grad);
  return cfg;
}

absl::StatusOr<train::TrainOptions> options_from(const io::RunConfig& cfg, bool init_random) {
  for (auto [value, name] : {std::pair{cfg.data().empty(), "--data"},
                             std::pair{cfg.steps() == 0, "--steps"},
                             std::pair{cfg.global_batch() == 0, "--global-batch"},
                             std::pair{cfg.seq_len() == 0, "--seq-len"}}) {
    if (value) return invalid_argument("missing required flag ", name, " (or its --config field)");
  }
  train::TrainOptions o;
  o.model_dir = cfg.model();
  o.init_random = init_random;
  o.data_path = cfg.data();
  o.steps = cfg.steps();
  o.global_batch = cfg.global_batch();
  o.seq_len = cfg.seq_len();
  if (cfg.has_lr()) o.adamw.lr = static_cast<float>(cfg.lr());
  o.adamw.weight_decay = static_cast<float>(cfg.weight_decay());
  if (cfg.has_beta1()) o.adamw.beta1 = static_cast<float>(cfg.beta1());
  if (cfg.has_beta2()) o.adamw.beta2 = static_cast<float>(cfg.beta2());
  if (cfg.has_eps()) o.adamw.eps = static_cast<float>(cfg.eps());
  o.clip_grad = cfg.clip_grad();
  o.save_dir = cfg.save();
  o.load_dir = cfg.load();
  o.save_every = cfg.save_every();
  o.metrics_path = cfg.metrics();
  o.log_every = cfg.has_log_every() ? cfg.log_every() : 1;
  o.seed = cfg.seed();
  if (o.model_dir.empty() && o.load_dir.empty()) {
    return invalid_argument("missing required flag --model (or --load)");
  }
  return o;
}

}  // namespace

absl::Status run_train(Session& session, const Args& args) {
  WEFT_ASSIGN_OR_RETURN(Flags flags, parse_flags(session, "train",
                                                 "train with AdamW (data parallel over the ranks)",
                                                 args, train_flags()));
  absl::StatusOr<io::RunConfig> cfg = run_config_from(flags);
  WEFT_RETURN_IF_ERROR(session.agree(cfg.status()));
  absl::StatusOr<train::TrainOptions> options = options_from(*cfg, flags.boolean("init-random"));
  WEFT_RETURN_IF_ERROR(session.agree(options.status()));

  std::unique_ptr<comm::Communicator> dp = session.world().split(0, session.rank(), "dp");
  auto agree = [&](absl::Status s) { return session.agree(std::move(s)); };
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer,
                        train::Trainer::create(*options, *dp, agree));
  WEFT_RETURN_IF_ERROR(trainer->run());
  if (!cfg->comm_report().empty()) {
    WEFT_RETURN_IF_ERROR(
        session.agree(comm::write_comm_report(session.world(), {dp.get()}, cfg->comm_report())));
  }
  return absl::OkStatus();
}

}  // namespace weft::cli
