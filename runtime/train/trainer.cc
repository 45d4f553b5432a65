#include "runtime/train/trainer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "parallel/grad_sync.h"
#include "runtime/core/allocator.h"
#include "runtime/core/logging.h"
#include "runtime/core/status.h"
#include "runtime/io/model_config.h"

namespace weft::train {
namespace {

std::vector<Tensor> grads_of(const std::vector<models::Param*>& params) {
  std::vector<Tensor> grads;
  grads.reserve(params.size());
  for (models::Param* p : params) grads.push_back(p->grad);
  return grads;
}

absl::Status validate(const TrainOptions& o, const TokenFile& data, int dp) {
  if (o.steps <= 0) return invalid_argument("--steps ", o.steps, " must be positive");
  if (o.global_batch <= 0) {
    return invalid_argument("--global-batch ", o.global_batch, " must be positive");
  }
  if (o.global_batch < dp) {
    return invalid_argument("--global-batch ", o.global_batch, " is smaller than the ", dp,
                            " data-parallel ranks (every rank needs at least one sequence)");
  }
  if (o.seq_len != data.seq_len()) {
    return invalid_argument("--seq-len ", o.seq_len, " does not match the token file ",
                            data.path(), ", whose lines have ", data.seq_len(), " tokens");
  }
  if (o.seq_len < 2) return invalid_argument("--seq-len ", o.seq_len, " must be at least 2");
  if (!(o.adamw.lr >= 0)) return invalid_argument("--lr ", o.adamw.lr, " must be >= 0");
  if (o.save_every < 0) return invalid_argument("--save-every ", o.save_every, " must be >= 0");
  if (o.log_every <= 0) return invalid_argument("--log-every ", o.log_every, " must be positive");
  return absl::OkStatus();
}

}  // namespace

Trainer::Trainer(const TrainOptions& options, comm::Communicator& dp, AgreeFn agree, TokenFile data)
    : options_(options), dp_(dp), agree_(std::move(agree)), data_(std::move(data)) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::create(const TrainOptions& options,
                                                         comm::Communicator& dp, AgreeFn agree) {
  absl::StatusOr<TokenFile> data = TokenFile::load(options.data_path);
  WEFT_RETURN_IF_ERROR(agree(data.status()));
  WEFT_RETURN_IF_ERROR(agree(validate(options, *data, dp.size())));
  std::unique_ptr<Trainer> trainer(new Trainer(options, dp, agree, std::move(*data)));
  WEFT_RETURN_IF_ERROR(agree(trainer->load_model()));
  const int64_t vocab = trainer->model_->config().vocab_size;
  if (trainer->data_.max_id() >= vocab) {
    WEFT_RETURN_IF_ERROR(agree(invalid_argument("token file ", options.data_path, " has id ",
                                                trainer->data_.max_id(), ", outside the vocabulary [0, ",
                                                vocab, ")")));
  }
  std::vector<models::Param*> params = trainer->model_->parameters();
  trainer->optimizer_ = std::make_unique<AdamW>(params, options.adamw);
  if (!options.load_dir.empty()) {
    absl::StatusOr<LoadedCheckpoint> checkpoint = load_checkpoint(options.load_dir);
    absl::Status status = checkpoint.status();
    if (status.ok()) status = trainer->restore(*checkpoint);
    WEFT_RETURN_IF_ERROR(agree(status));
  }
  if (trainer->start_step_ >= options.steps) {
    WEFT_RETURN_IF_ERROR(agree(invalid_argument("the checkpoint is at step ", trainer->start_step_,
                                                ", --steps ", options.steps,
                                                " leaves nothing to do")));
  }
  if (!options.save_dir.empty() && dp.rank() == 0) {
    trainer->writer_ = std::make_unique<CheckpointWriter>();
  }
  return trainer;
}

absl::Status Trainer::load_model() {
  if (!options_.load_dir.empty() || options_.init_random) {
    // Weights come from the checkpoint (or the seed); the config from the model dir, or else
    // from the checkpoint's manifest.
    io::ModelConfig config;
    if (!options_.model_dir.empty()) {
      WEFT_ASSIGN_OR_RETURN(config, io::load_model_config(options_.model_dir));
    } else {
      WEFT_ASSIGN_OR_RETURN(std::string path, find_latest_checkpoint(options_.load_dir));
      WEFT_ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, load_checkpoint(path));
      WEFT_ASSIGN_OR_RETURN(config, io::parse_model_config(ckpt.manifest.model_config_json()));
    }
    WEFT_ASSIGN_OR_RETURN(model_, models::CausalLM::from_config(config, options_.seed));
    return absl::OkStatus();
  }
  if (options_.model_dir.empty()) return invalid_argument("missing --model (or --load)");
  WEFT_ASSIGN_OR_RETURN(model_, models::CausalLM::from_pretrained(options_.model_dir));
  return absl::OkStatus();
}

absl::Status Trainer::restore(const LoadedCheckpoint& checkpoint) {
  std::vector<models::Param*> params = model_->parameters();
  auto take = [&](const std::string& name, Tensor& into) -> absl::Status {
    auto it = checkpoint.tensors.find(name);
    if (it == checkpoint.tensors.end()) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint ", checkpoint.path, " has no tensor '", name, "'"));
    }
    if (it->second.shape() != into.shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint ", checkpoint.path, ": tensor '", name, "' has shape ",
          shape_str(it->second.shape()), ", the model expects ", shape_str(into.shape())));
    }
    into.copy_from(it->second);
    return absl::OkStatus();
  };
  for (size_t i = 0; i < params.size(); ++i) {
    WEFT_RETURN_IF_ERROR(take(params[i]->name, params[i]->value));
    WEFT_RETURN_IF_ERROR(take(params[i]->name + ".exp_avg", optimizer_->exp_avg()[i]));
    WEFT_RETURN_IF_ERROR(take(params[i]->name + ".exp_avg_sq", optimizer_->exp_avg_sq()[i]));
  }
  start_step_ = checkpoint.manifest.step();
  if (checkpoint.manifest.data_position() != start_step_ * options_.global_batch) {
    return invalid_argument("checkpoint ", checkpoint.path, " consumed ",
                            checkpoint.manifest.data_position(), " sequences in ", start_step_,
                            " steps; --global-batch ", options_.global_batch,
                            " would not continue the same data order");
  }
  WEFT_LOG(INFO) << "resumed from " << checkpoint.path << " at step " << start_step_;
  return absl::OkStatus();
}

StepMetrics Trainer::train_step(int64_t step) {
  const auto start = std::chrono::steady_clock::now();
  reset_peak_memory(Device::cpu());
  const std::vector<models::Param*>& params = model_->parameters();
  const Range mine = split_evenly(options_.global_batch, dp_.size(), dp_.rank());
  const int64_t first = (step - 1) * options_.global_batch;
  Tensor tokens = data_.sequences(first + mine.begin, mine.size());  // [b, T]
  const int64_t global_predicted = options_.global_batch * (options_.seq_len - 1);

  model_->zero_grad();
  models::ForwardResult out = model_->forward(tokens, {.keep_logits = false, .for_backward = true});
  model_->backward(1.0f / static_cast<float>(global_predicted));
  parallel::all_reduce_grads(dp_, grads_of(params));
  Tensor loss = Tensor::from_floats({static_cast<float>(out.loss_sum)}, {1});
  dp_.all_reduce(loss);

  StepMetrics m;
  m.step = step;
  m.loss = loss.item() / static_cast<double>(global_predicted);
  m.grad_norm = clip_grad_norm(params, options_.clip_grad);
  m.lr = optimizer_->config().lr;
  if (writer_) {
    // The save in flight reads these tensors: the optimizer may change them only once copied.
    const auto wait_start = std::chrono::steady_clock::now();
    writer_->wait_snapshot();
    checkpoint_wait_s_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
  }
  optimizer_->step(step);
  m.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.tokens_per_s = static_cast<double>(options_.global_batch * options_.seq_len) / m.step_time_s;
  m.peak_bytes = memory_stats(Device::cpu()).peak_bytes;
  return m;
}

void Trainer::start_save(int64_t step) {
  io::CheckpointManifest manifest;
  manifest.set_format_version(1);
  manifest.set_step(step);
  manifest.set_data_position(step * options_.global_batch);
  io::MeshRecord& mesh = *manifest.mutable_mesh();
  mesh.set_dp(dp_.size());
  mesh.set_pp(1);
  mesh.set_tp(1);
  mesh.set_sp(1);
  mesh.set_ep(1);
  mesh.set_etp(1);
  manifest.set_model_config_json(model_->config().json);
  manifest.set_seed(options_.seed);
  std::vector<CheckpointTensor> tensors;
  const std::vector<models::Param*>& params = model_->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const models::Param& p = *params[i];
    const std::vector<int64_t> offsets(p.spec.global_shape.size(), 0);
    tensors.push_back({p.name, p.value, p.spec.global_shape, offsets});
    tensors.push_back({p.name + ".exp_avg", optimizer_->exp_avg()[i], p.spec.global_shape, offsets});
    tensors.push_back(
        {p.name + ".exp_avg_sq", optimizer_->exp_avg_sq()[i], p.spec.global_shape, offsets});
  }
  writer_->save_async(options_.save_dir, std::move(manifest), std::move(tensors));
}

absl::Status Trainer::append_metrics(const StepMetrics& m) {
  std::ofstream out(options_.metrics_path, std::ios::app);
  if (!out) {
    return absl::InternalError(
        absl::StrCat("cannot write metrics file '", options_.metrics_path, "'"));
  }
  out << absl::StrFormat(
      "{\"step\": %d, \"loss\": %.9g, \"grad_norm\": %.9g, \"lr\": %.9g, \"step_time_s\": %.6f, "
      "\"tokens_per_s\": %.3f, \"peak_bytes\": %d}\n",
      m.step, m.loss, m.grad_norm, m.lr, m.step_time_s, m.tokens_per_s, m.peak_bytes);
  return out ? absl::OkStatus()
             : absl::InternalError(absl::StrCat("write to '", options_.metrics_path, "' failed"));
}

absl::Status Trainer::run() {
  const bool root = dp_.rank() == 0;
  if (root && !options_.metrics_path.empty() && start_step_ == 0) {
    std::ofstream truncate(options_.metrics_path, std::ios::trunc);
  }
  for (int64_t step = start_step_ + 1; step <= options_.steps; ++step) {
    const StepMetrics m = train_step(step);
    history_.push_back(m);
    absl::Status status;
    if (root && !options_.metrics_path.empty()) status = append_metrics(m);
    if (root && (step % options_.log_every == 0 || step == options_.steps)) {
      std::printf("step %lld/%lld  loss %.6f  grad_norm %.4f  lr %.3g  %.3fs  %.0f tok/s\n",
                  static_cast<long long>(step), static_cast<long long>(options_.steps), m.loss,
                  m.grad_norm, m.lr, m.step_time_s, m.tokens_per_s);
      std::fflush(stdout);
    }
    const bool save_now = !options_.save_dir.empty() &&
                          ((options_.save_every > 0 && step % options_.save_every == 0) ||
                           step == options_.steps);
    // A failed save or metrics write stops every rank (none is left waiting in a collective);
    // the previous save must be on disk before the next starts.
    if (save_now && writer_ && status.ok()) status = writer_->wait();
    WEFT_RETURN_IF_ERROR(agree_(status));
    if (save_now && writer_) start_save(step);
  }
  absl::Status final_status = writer_ ? writer_->wait() : absl::OkStatus();
  if (writer_ && final_status.ok() && root) {
    std::printf("saved checkpoint step %lld in %s (snapshot %.3fs, write %.3fs in background)\n",
                static_cast<long long>(options_.steps), options_.save_dir.c_str(),
                writer_->last_snapshot_seconds(), writer_->last_write_seconds());
  }
  return agree_(final_status);
}

}  // namespace weft::train
