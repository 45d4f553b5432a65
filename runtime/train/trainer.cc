#include "runtime/train/trainer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/moe_block.h"
#include "runtime/core/allocator.h"
#include "runtime/core/exit_code.h"
#include "runtime/core/fault_injection.h"
#include "runtime/core/logging.h"
#include "runtime/core/status.h"
#include "runtime/io/model_config.h"
#include "runtime/train/checkpoint_reader.h"
#include "runtime/train/pipeline_executor.h"
#include "runtime/train/pipeline_schedule.h"
#include "runtime/train/stop_signal.h"

namespace weft::train {
namespace {

absl::Status validate(const TrainOptions& o, const TokenDataset& data) {
  if (o.steps <= 0) return invalid_argument("--steps ", o.steps, " must be positive");
  if (o.global_batch <= 0) {
    return invalid_argument("--global-batch ", o.global_batch, " must be positive");
  }
  if (o.seq_len != data.seq_len()) {
    return invalid_argument("--seq-len ", o.seq_len, " does not match the token file ", data.path(),
                            ", whose lines have ", data.seq_len(), " tokens");
  }
  if (o.seq_len < 2) return invalid_argument("--seq-len ", o.seq_len, " must be at least 2");
  if (o.global_batch > data.num_sequences()) {
    return invalid_argument("--global-batch ", o.global_batch, " is larger than the token data ",
                            data.path(), ", which has ", data.num_sequences(),
                            " sequences (a step would repeat sequences)");
  }
  if (!(o.adamw.lr >= 0) || !std::isfinite(o.adamw.lr)) {
    return invalid_argument("--lr ", o.adamw.lr, " must be a finite number >= 0");
  }
  WEFT_RETURN_IF_ERROR(check_lr_schedule({.decay = o.lr_decay,
                                          .peak = o.adamw.lr,
                                          .warmup_steps = o.warmup_steps,
                                          .min_lr = o.min_lr,
                                          .steps = o.steps}));
  if (o.lr_decay_steps < 0) {
    return invalid_argument("--lr-decay-steps ", o.lr_decay_steps, " must be >= 1");
  }
  if (o.save_every < 0) return invalid_argument("--save-every ", o.save_every, " must be >= 0");
  if (o.keep_last < 0) return invalid_argument("--keep-last ", o.keep_last, " must be >= 0");
  if (o.log_every <= 0) return invalid_argument("--log-every ", o.log_every, " must be positive");
  if (o.micro_batch < 0) return invalid_argument("--micro-batch ", o.micro_batch, " must be >= 0");
  return absl::OkStatus();
}

// Where this rank's slice of a parameter sits in the whole tensor.
std::vector<int64_t> shard_offsets(const models::ShardSpec& spec) {
  std::vector<int64_t> offsets(spec.global_shape.size(), 0);
  if (spec.split_dim >= 0) offsets[spec.split_dim] = spec.offset;
  return offsets;
}

}  // namespace

Trainer::Trainer(const TrainOptions& options, std::unique_ptr<parallel::Mesh> mesh, AgreeFn agree,
                 std::unique_ptr<TokenDataset> data)
    : options_(options), mesh_(std::move(mesh)), agree_(std::move(agree)), data_(std::move(data)) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::create(const TrainOptions& options,
                                                         comm::Communicator& world, AgreeFn agree) {
  absl::StatusOr<parallel::ParallelDims> dims = parallel::resolve_dims(
      world.size(), options.tp, options.pp, options.sp, options.ep, options.etp);
  WEFT_RETURN_IF_ERROR(agree(dims.status()));
  absl::StatusOr<std::unique_ptr<TokenDataset>> data =
      open_token_data(options.data_path, options.seq_len, options.data_seed);
  WEFT_RETURN_IF_ERROR(agree(data.status()));
  WEFT_RETURN_IF_ERROR(agree(validate(options, **data)));
  std::unique_ptr<Trainer> trainer(
      new Trainer(options, parallel::Mesh::create(world, *dims), agree, std::move(*data)));
  WEFT_RETURN_IF_ERROR(agree(trainer->validate_batch()));
  WEFT_RETURN_IF_ERROR(agree(trainer->load_model()));
  models::CausalLM& model = *trainer->model_;
  const int64_t vocab = model.config().vocab_size;
  if (trainer->data_->max_id() >= vocab) {
    WEFT_RETURN_IF_ERROR(agree(
        invalid_argument("token data ", options.data_path, " has id ", trainer->data_->max_id(),
                         ", outside the model's vocabulary [0, ", vocab, ")")));
  }
  if (options.seq_len > model.config().max_position_embeddings) {
    WEFT_RETURN_IF_ERROR(agree(invalid_argument("--seq-len ", options.seq_len,
                                                " exceeds the model's max_position_embeddings ",
                                                model.config().max_position_embeddings)));
  }
  WEFT_RETURN_IF_ERROR(agree(model.check_batch(trainer->data_->sequences(0, 1))));
  WEFT_RETURN_IF_ERROR(agree(trainer->load_eval_data()));
  model.zero_grad();  // the optimizer's reducer packs the grad tensors: they must exist
  trainer->optimizer_ =
      std::make_unique<AdamW>(model.parameters(), options.adamw,
                              // Weights are replicated over dp and sp: their gradients are summed
                              // over both; expert weights are replicated over edp.
                              DataParallelOptions{.dp = &trainer->mesh_->dp_sp(),
                                                  .zero1 = options.zero1,
                                                  .expert_dp = &trainer->mesh_->edp()});
  for (auto [layer, moe] : model.moe_layers()) {
    moe->set_aux_loss_scale(options.moe_aux_loss_coef /
                            static_cast<double>(trainer->micro_batches()));
  }
  AdamW* optimizer = trainer->optimizer_.get();
  if (options.overlap_grad_reduce) {
    model.set_grad_ready_hook([optimizer](models::Param& p) { optimizer->grad_ready(p); });
  }
  if (!options.load_dir.empty()) WEFT_RETURN_IF_ERROR(trainer->resume());
  if (!options.save_dir.empty() && trainer->start_step_ < options.steps) {
    WEFT_RETURN_IF_ERROR(agree(trainer->remove_save_leftovers()));
    trainer->writer_ = std::make_unique<CheckpointWriter>(world);
  }
  return trainer;
}

absl::Status Trainer::resume() {
  const std::vector<std::string> candidates = checkpoint_candidates(options_.load_dir);
  if (candidates.empty()) return agree_(find_latest_checkpoint(options_.load_dir).status());
  for (size_t i = 0; i < candidates.size(); ++i) {
    absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
        CheckpointReader::open(candidates[i]);
    absl::Status local = reader.status();
    if (local.ok()) local = restore(**reader);
    // [0]: this rank failed; [1]: it failed for another reason than damaged files (DataLoss),
    // where an older checkpoint would not help.
    Tensor failed =
        Tensor::from_ints({local.ok() ? 0 : 1, !local.ok() && !absl::IsDataLoss(local)}, {2});
    mesh_->world().all_reduce(failed, comm::ReduceOp::kMax);
    if (failed.to_ints()[0] == 0) {
      if (i > 0 && mesh_->rank() == 0) {
        WEFT_LOG(WARNING) << "--load-fallback: resumed from " << candidates[i]
                          << ", the newest checkpoint that loads; newer ones are damaged";
      }
      return absl::OkStatus();
    }
    const bool older_exists = i + 1 < candidates.size() && failed.to_ints()[1] == 0;
    if (older_exists && options_.load_fallback) {
      if (!local.ok()) {
        WEFT_LOG(WARNING) << local.message() << "; --load-fallback: trying " << candidates[i + 1];
      }
      continue;
    }
    if (older_exists && absl::IsDataLoss(local)) {
      local = absl::DataLossError(absl::StrCat(local.message(), "; an older checkpoint exists (",
                                               candidates[i + 1],
                                               "): pass --load-fallback to resume from the newest "
                                               "one that loads"));
    }
    return agree_(local);
  }
  return agree_(absl::OkStatus());  // not reached: the last candidate returns above
}

absl::Status Trainer::remove_save_leftovers() {
  if (mesh_->rank() != 0) return absl::OkStatus();
  std::error_code ec;
  if (!std::filesystem::is_directory(options_.save_dir, ec)) return absl::OkStatus();
  WEFT_ASSIGN_OR_RETURN(std::vector<std::string> removed,
                        remove_leftover_checkpoints(options_.save_dir));
  for (const std::string& dir : removed) {
    WEFT_LOG(INFO) << "removed " << dir << ", the leftover of an interrupted save";
  }
  return absl::OkStatus();
}

absl::Status Trainer::validate_batch() const {
  const int dp = mesh_->dims().dp;
  if (options_.global_batch % dp != 0) {
    return invalid_argument("--global-batch ", options_.global_batch, " is not divisible by the ",
                            dp, " data-parallel ranks (", mesh_->dims().str(), ")");
  }
  const int64_t per_rank = options_.global_batch / dp;
  const int64_t micro = options_.micro_batch > 0 ? options_.micro_batch : per_rank;
  if (per_rank % micro != 0) {
    return invalid_argument("--micro-batch ", micro, " does not divide the ", per_rank,
                            " sequences per data-parallel rank (--global-batch ",
                            options_.global_batch, " / dp ", dp, ")");
  }
  if (options_.token_weave && micro < 2) {
    return invalid_argument(
        "--token-weave runs each micro-batch as two halves of its sequences: a micro-batch of ",
        micro, " sequence has none to split (--global-batch ", options_.global_batch, " / dp ", dp,
        ", --micro-batch ", options_.micro_batch, ")");
  }
  // The schedule's own constraints (interleaving needs micro-batches % pp == 0, ...).
  return pipeline_schedule({.pp = mesh_->dims().pp,
                            .pp_rank = mesh_->coord().pp,
                            .virtual_chunks = options_.pp_virtual,
                            .micro_batches = static_cast<int>(per_rank / micro)})
      .status();
}

absl::Status Trainer::load_model() {
  // TokenWeave runs on Megatron-SP's layout.
  const bool sequence_parallel = options_.sequence_parallel || options_.token_weave;
  const models::ParallelOptions parallel{.mesh = mesh_.get(),
                                         .sequence_parallel = sequence_parallel,
                                         .pp_virtual = options_.pp_virtual,
                                         .sp_attn = options_.sp_attn,
                                         .sp_linear = options_.sp_linear,
                                         .sp_ulysses = options_.sp_ulysses,
                                         .recompute = options_.recompute,
                                         .streambp = options_.streambp,
                                         .seco = options_.seco,
                                         .spaco_keep = options_.spaco_keep,
                                         .spaco_seed = options_.seed,
                                         .moe_capacity_factor = options_.moe_capacity_factor,
                                         .expert_placement = options_.expert_placement,
                                         .speculative_moe = options_.speculative_moe,
                                         .token_weave = options_.token_weave};
  if (!options_.model_dir.empty()) {
    source_model_dir_ = std::filesystem::absolute(options_.model_dir).lexically_normal().string();
  }
  if (!options_.load_dir.empty() || options_.init_random) {
    // Weights come from the checkpoint (or the seed); the config from the model dir, or else
    // from the checkpoint's manifest.
    io::ModelConfig config;
    if (!options_.model_dir.empty()) {
      WEFT_ASSIGN_OR_RETURN(config, io::load_model_config(options_.model_dir));
    } else {
      // Every checkpoint of a run holds the same config: take it from the newest readable
      // manifest (which checkpoint is restored, and whether a damaged one is refused, is
      // resume()'s decision).
      absl::Status first_error = find_latest_checkpoint(options_.load_dir).status();
      std::string json;
      for (const std::string& candidate : checkpoint_candidates(options_.load_dir)) {
        absl::StatusOr<io::CheckpointManifest> manifest = read_manifest(candidate);
        if (manifest.ok()) {
          json = manifest->model_config_json();
          break;
        }
        if (first_error.ok()) first_error = manifest.status();
      }
      if (json.empty())
        return first_error.ok() ? absl::NotFoundError("no checkpoint") : first_error;
      WEFT_ASSIGN_OR_RETURN(config, io::parse_model_config(json));
    }
    WEFT_ASSIGN_OR_RETURN(model_, models::CausalLM::from_config(config, options_.seed, parallel));
    return absl::OkStatus();
  }
  if (options_.model_dir.empty()) return invalid_argument("missing --model (or --load)");
  WEFT_ASSIGN_OR_RETURN(model_, models::CausalLM::from_pretrained(options_.model_dir, parallel));
  return absl::OkStatus();
}

absl::Status Trainer::restore(const CheckpointReader& checkpoint) {
  for (models::Param* p : model_->parameters()) {
    const int64_t length = p->spec.split_dim >= 0 ? p->value.dim(p->spec.split_dim) : 0;
    WEFT_ASSIGN_OR_RETURN(Tensor value,
                          checkpoint.read_shard(p->name, p->spec.global_shape, p->spec.split_dim,
                                                p->spec.offset, length));
    p->value.copy_from(value);
  }
  WEFT_RETURN_IF_ERROR(
      optimizer_->load_state([&](const std::string& name, const std::vector<int64_t>& offsets,
                                 const std::vector<int64_t>& lengths) {
        return checkpoint.read_slice(name, offsets, lengths);
      }));
  start_step_ = checkpoint.step();
  if (source_model_dir_.empty()) source_model_dir_ = checkpoint.manifest().source_model_dir();
  if (checkpoint.data_position() != start_step_ * options_.global_batch) {
    return invalid_argument("checkpoint ", checkpoint.path(), " consumed ",
                            checkpoint.data_position(), " sequences in ", start_step_,
                            " steps; --global-batch ", options_.global_batch,
                            " would not continue the same data order");
  }
  const std::optional<uint64_t> seed = data_->shuffle_seed();
  if (checkpoint.manifest().has_data_seed() && seed && *seed != checkpoint.manifest().data_seed()) {
    return invalid_argument("checkpoint ", checkpoint.path(), " read ", options_.data_path,
                            " in the order of --data-seed ", checkpoint.manifest().data_seed(),
                            "; --data-seed ", *seed, " would not continue the same data order");
  }
  if (mesh_->rank() == 0) {
    const io::MeshRecord& saved = checkpoint.mesh();
    WEFT_LOG(INFO) << "resumed from " << checkpoint.path() << " at step " << start_step_
                   << " (saved on mesh dp=" << saved.dp() << " pp=" << saved.pp()
                   << " tp=" << saved.tp() << " sp=" << saved.sp() << "; now "
                   << mesh_->dims().str() << ")";
  }
  return absl::OkStatus();
}

double Trainer::run_microbatches(const Tensor& tokens, float loss_scale, bool forward_only) {
  const int64_t rows = tokens.dim(0);
  const int64_t micro = options_.micro_batch > 0 ? options_.micro_batch : rows;
  std::vector<Tensor> batches;  // [micro, T] each; every pp rank of a dp group gets the same
  for (int64_t first = 0; first < rows; first += micro) {
    batches.push_back(tokens.slice(first, first + micro));
  }
  absl::StatusOr<PipelineStepResult> result = run_pipeline_step(
      *model_, mesh_.get(), batches, {.loss_scale = loss_scale, .forward_only = forward_only});
  // validate_batch() checked every schedule constraint before the first step.
  WEFT_CHECK(result.ok()) << result.status().message();
  return result->loss_sum;
}

int64_t Trainer::micro_batches() const {
  const int64_t per_rank = options_.global_batch / mesh_->dims().dp;
  return per_rank / (options_.micro_batch > 0 ? options_.micro_batch : per_rank);
}

void Trainer::moe_metrics(StepMetrics& m) {
  int64_t routed = 0, dropped = 0;
  double aux = 0;
  for (auto [layer, moe] : model_->moe_layers()) {
    const models::MoeCounts c = moe->take_counts();
    routed += c.routed;
    dropped += c.dropped;
    aux += c.aux;
  }
  if (options_.moe_capacity_factor > 0) {
    // Every rank counts the rows it routed (tp ranks the same rows when they share them: the
    // ratio is unchanged).
    Tensor counts = Tensor::from_ints({routed, dropped}, {2});
    mesh_->world().all_reduce(counts);
    const std::vector<int64_t> total = counts.to_ints();
    m.moe_drop_rate =
        total[0] > 0 ? static_cast<double>(total[1]) / static_cast<double>(total[0]) : 0;
  }
  if (options_.moe_aux_loss_coef > 0) {
    // Every rank of a stage holds the same (global) terms of its layers; stages add theirs.
    Tensor sum = Tensor::from_floats({static_cast<float>(aux)}, {1});
    mesh_->pp().all_reduce(sum);
    m.moe_aux_loss =
        sum.item() / static_cast<double>(model_->config().num_hidden_layers * micro_batches());
  }
}

StepMetrics Trainer::train_step(int64_t step) {
  const auto start = SteadyClock::now();
  reset_peak_memory(default_device());
  comm::Communicator& dp = mesh_->dp();
  const int64_t per_rank = options_.global_batch / dp.size();
  const int64_t first = (step - 1) * options_.global_batch + dp.rank() * per_rank;
  Tensor tokens = data_->sequences(first, per_rank);  // [per_rank, T]
  const int64_t global_predicted = options_.global_batch * (options_.seq_len - 1);

  model_->zero_grad();
  const double loss_sum = run_microbatches(tokens, 1.0f / static_cast<float>(global_predicted));
  optimizer_->finish_grads();
  Tensor loss = Tensor::from_floats({static_cast<float>(loss_sum)}, {1});
  mesh_->dp_sp().all_reduce(loss);  // every sp rank holds its positions' share

  StepMetrics m;
  m.step = step;
  moe_metrics(m);
  m.loss = loss.item() / static_cast<double>(global_predicted);
  m.grad_norm = optimizer_->clip_grad_norm(options_.clip_grad, &mesh_->tp(), &mesh_->pp(),
                                           {&mesh_->ep(), &mesh_->etp()});
  m.lr = LrSchedule{.decay = options_.lr_decay,
                    .peak = options_.adamw.lr,
                    .warmup_steps = options_.warmup_steps,
                    .min_lr = options_.min_lr,
                    .steps = options_.lr_decay_steps > 0 ? options_.lr_decay_steps : options_.steps}
             .at(step);
  optimizer_->set_lr(static_cast<float>(m.lr));
  if (writer_) {
    // The save in flight reads these tensors: the optimizer may change them only once copied.
    const auto wait_start = SteadyClock::now();
    writer_->wait_snapshot();
    count_checkpoint_wait(m, wait_start);
  }
  // A non-finite loss or gradient would poison every weight: run() stops before it is applied.
  // (Both are the same on every rank: the loss is summed, the norm reduced over the mesh.)
  if (std::isfinite(m.loss) && std::isfinite(m.grad_norm)) optimizer_->step(step);
  m.step_time_s = seconds_since(start);
  m.tokens_per_s = static_cast<double>(options_.global_batch * options_.seq_len) / m.step_time_s;
  m.peak_bytes = memory_stats(default_device()).peak_bytes;
  return m;
}

void Trainer::start_save(int64_t step) {
  io::CheckpointManifest header;
  header.set_format_version(2);
  header.set_step(step);
  header.set_data_position(step * options_.global_batch);
  *header.mutable_mesh() = mesh_record(mesh_->dims());
  header.set_model_config_json(model_->config().json);
  header.set_seed(options_.seed);
  header.set_source_model_dir(source_model_dir_);
  if (const std::optional<uint64_t> seed = data_->shuffle_seed()) header.set_data_seed(*seed);

  // Each stored slice is written by exactly one rank: dp and sp rank 0 (every dp x sp rank for
  // its own ZeRO-1 moment rows), and among tp ranks holding the same slice only the first. An
  // expert-parallel weight: its host's edp rank 0 (every edp rank its ZeRO-1 rows), all etp
  // ranks when split over etp.
  const parallel::Coord& c = mesh_->coord();
  auto writes = [&](const models::Param& p) {
    if (p.expert_parallel()) return c.etp == 0 || p.spec.group == "etp";
    return p.spec.replica == 0 && (c.tp == 0 || p.spec.group == "tp");
  };
  auto replica_zero = [&](const models::Param& p) {
    return p.expert_parallel() ? c.edp == 0 : c.dp == 0 && c.sp == 0;
  };
  // The split group a checkpoint records: none for a whole tensor (an unsplit expert's "ep"
  // names where it lives, not a split).
  auto split_group = [](const models::Param& p) {
    return p.spec.split_dim >= 0 ? p.spec.group : std::string();
  };
  std::map<std::string, const models::Param*> by_name;
  std::vector<CheckpointTensor> tensors;
  for (const models::Param* p : model_->parameters()) {
    by_name[p->name] = p;
    if (replica_zero(*p) && writes(*p)) {
      tensors.push_back({p->name, p->value, p->spec.global_shape, shard_offsets(p->spec),
                         p->spec.split_dim, split_group(*p)});
    }
  }
  for (const OptimizerStateTensor& s : optimizer_->state_tensors()) {
    const models::Param& p = *by_name.at(s.name.substr(0, s.name.rfind(".exp_avg")));
    if ((options_.zero1 || replica_zero(p)) && writes(p)) {
      tensors.push_back(
          {s.name, s.value, s.global_shape, s.offsets, p.spec.split_dim, split_group(p)});
    }
  }
  writer_->save_async(options_.save_dir, std::move(header), std::move(tensors));
}

void Trainer::count_checkpoint_wait(StepMetrics& m, SteadyClock::time_point start) {
  const double waited = seconds_since(start);
  m.checkpoint_wait_s += waited;
  checkpoint_wait_s_ += waited;
}

Trainer::Boundary Trainer::step_boundary() {
  Tensor flags = Tensor::from_ints(
      {writer_ && !writer_->poll().ok() ? 1 : 0, static_cast<int64_t>(stop_signal_received())},
      {2});
  mesh_->world().all_reduce(flags, comm::ReduceOp::kMax);
  const std::vector<int64_t> v = flags.to_ints();
  return {.save_failed = v[0] != 0, .stop_signal = static_cast<int>(v[1])};
}

absl::Status Trainer::save(int64_t step, StepMetrics& m, bool wait) {
  // Waits for the save in flight (counted as this step's checkpoint wait); once it is complete,
  // rank 0 applies --keep-last. Every rank learns a failure on any rank.
  auto wait_for_save = [this, &m]() {
    const auto wait_start = SteadyClock::now();
    absl::Status status = writer_->wait();
    if (status.ok() && mesh_->rank() == 0 && options_.keep_last > 0) {
      status = prune_checkpoints(options_.save_dir, options_.keep_last);
    }
    count_checkpoint_wait(m, wait_start);
    return agree_(status);
  };
  WEFT_RETURN_IF_ERROR(wait_for_save());  // the previous save must be on disk before the next
  start_save(step);
  return wait ? wait_for_save() : absl::OkStatus();
}

absl::Status Trainer::run() {
  const bool root = mesh_->rank() == 0;
  if (start_step_ >= options_.steps) {
    if (root) {
      std::printf(
          "the checkpoint in %s is at step %lld, which reaches --steps %lld: nothing to "
          "do\n",
          options_.load_dir.c_str(), static_cast<long long>(start_step_),
          static_cast<long long>(options_.steps));
    }
    return absl::OkStatus();
  }
  absl::Status opened;
  if (root && !options_.metrics_path.empty()) {
    absl::StatusOr<MetricsLog> log = MetricsLog::open(options_.metrics_path, start_step_);
    opened = log.status();
    if (log.ok()) metrics_.emplace(std::move(*log));
  }
  WEFT_RETURN_IF_ERROR(agree_(opened));
  install_stop_handlers();
  for (int64_t step = start_step_ + 1; step <= options_.steps; ++step) {
    maybe_stall(mesh_->rank(), step);
    WEFT_RETURN_IF_ERROR(maybe_fail(mesh_->rank(), step));
    StepMetrics m = train_step(step);
    const bool finite = std::isfinite(m.loss) && std::isfinite(m.grad_norm);
    m.skipped = !finite && options_.skip_nonfinite;
    if (finite && eval_due(step)) m.eval_loss = evaluate();
    const bool save_now =
        writer_ != nullptr && finite &&
        ((options_.save_every > 0 && step % options_.save_every == 0) || step == options_.steps);
    // The last save is waited for here (the process cannot exit before it is on disk), so its
    // wait is in the metrics too.
    if (save_now) WEFT_RETURN_IF_ERROR(save(step, m, options_.sync_save || step == options_.steps));
    history_.push_back(m);
    // A failed metrics write stops every rank (none is left waiting in a collective).
    absl::Status status = metrics_ ? metrics_->append(m) : absl::OkStatus();
    if (root &&
        (step % options_.log_every == 0 || step == options_.steps || !finite || m.eval_loss)) {
      std::printf("step %lld/%lld  loss %.6f  grad_norm %.4f  lr %.3g  %.3fs  %.0f tok/s",
                  static_cast<long long>(step), static_cast<long long>(options_.steps), m.loss,
                  m.grad_norm, m.lr, m.step_time_s, m.tokens_per_s);
      if (m.eval_loss) std::printf("  eval_loss %.6f", *m.eval_loss);
      std::printf("\n");
      std::fflush(stdout);
    }
    WEFT_RETURN_IF_ERROR(agree_(status));
    if (!finite && options_.skip_nonfinite) {
      if (root) {
        std::fprintf(stderr,
                     "weft train: step %lld skipped: the loss is %g and the gradient norm %g "
                     "(not finite); the weights are unchanged (--skip-nonfinite)\n",
                     static_cast<long long>(step), m.loss, m.grad_norm);
      }
    } else if (!finite) {
      const std::string kept = writer_ ? absl::StrCat("the newest complete checkpoint in ",
                                                      options_.save_dir, " is kept")
                                       : std::string("nothing was saved (no --save)");
      return agree_(root ? absl::InternalError(absl::StrFormat(
                               "step %d: the loss is %g and the gradient norm %g (not finite): "
                               "training stopped before the optimizer step; %s",
                               step, m.loss, m.grad_norm, kept))
                         : absl::OkStatus());
    }

    const Boundary boundary = step_boundary();
    if (boundary.save_failed) {
      // The same status on every rank (the writer agrees on it); the failed save's files are
      // gone and older checkpoints are untouched.
      const absl::Status failed = writer_->wait();
      absl::StatusOr<std::string> newest = find_latest_checkpoint(options_.save_dir);
      return agree_(
          root ? absl::Status(failed.code(), absl::StrCat(failed.message(), " (noticed after step ",
                                                          step, "; newest complete checkpoint: ",
                                                          newest.ok() ? *newest : "none", ")"))
               : absl::OkStatus());
    }
    if (boundary.stop_signal != 0 && step < options_.steps) {
      std::string saved = "nothing saved (no --save)";
      if (writer_) {
        if (!save_now) WEFT_RETURN_IF_ERROR(save(step, m, /*wait=*/true));
        WEFT_RETURN_IF_ERROR(agree_(writer_->wait()));
        saved = absl::StrCat("checkpoint saved in ", options_.save_dir, "/", step_dir_name(step));
      }
      WEFT_RETURN_IF_ERROR(agree_(metrics_ ? metrics_->close() : absl::OkStatus()));
      return with_exit_code(
          absl::AbortedError(absl::StrCat("stopped by ", signal_name(boundary.stop_signal),
                                          " after step ", step, ": ", saved, "; exit code ",
                                          kExitStopped, " (resume with --load)")),
          kExitStopped);
    }
  }
  absl::Status final_status = writer_ ? writer_->wait() : absl::OkStatus();
  if (writer_ && final_status.ok() && root) {
    std::printf("saved checkpoint step %lld in %s (snapshot %.3fs, write %.3fs in background)\n",
                static_cast<long long>(options_.steps), options_.save_dir.c_str(),
                writer_->last_snapshot_seconds(), writer_->last_write_seconds());
  }
  if (final_status.ok() && metrics_) final_status = metrics_->close();
  return agree_(final_status);
}

}  // namespace weft::train
