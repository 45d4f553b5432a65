// The validation loss of `weft train --eval-data` (docs/architecture.md, "Training loop"): the
// same data-parallel split and micro-batches as a training step, forward only.
#include <vector>

#include "models/moe_block.h"
#include "runtime/core/status.h"
#include "runtime/train/pipeline_executor.h"
#include "runtime/train/trainer.h"

namespace weft::train {

absl::Status Trainer::load_eval_data() {
  if (options_.eval_data_path.empty()) {
    if (options_.eval_every > 0 || options_.eval_batches > 0) {
      return invalid_argument("--eval-every and --eval-batches need --eval-data");
    }
    return absl::OkStatus();
  }
  // A token file (its lines in order) or a `weft data prepare` directory (its windows in the
  // order of seed 0: a fixed validation set whatever --data-seed is).
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<TokenDataset> loaded,
                        open_token_data(options_.eval_data_path, options_.seq_len, 0));
  const TokenDataset& data = *loaded;
  if (data.seq_len() != options_.seq_len) {
    return invalid_argument("--eval-data ", options_.eval_data_path, " has sequences of ",
                            data.seq_len(), " tokens, --seq-len is ", options_.seq_len);
  }
  const int64_t vocab = model_->config().vocab_size;
  if (data.max_id() >= vocab) {
    return invalid_argument("--eval-data ", options_.eval_data_path, " has id ", data.max_id(),
                            ", outside the vocabulary [0, ", vocab, ")");
  }
  const int64_t whole = data.num_sequences() / options_.global_batch;
  if (whole == 0) {
    return invalid_argument("--eval-data ", options_.eval_data_path, " has ", data.num_sequences(),
                            " sequences, fewer than one --global-batch (", options_.global_batch,
                            ")");
  }
  if (options_.eval_batches > whole) {
    return invalid_argument("--eval-batches ", options_.eval_batches, " needs ",
                            options_.eval_batches * options_.global_batch,
                            " sequences; --eval-data ", options_.eval_data_path, " has ",
                            data.num_sequences());
  }
  eval_data_ = std::move(loaded);
  return absl::OkStatus();
}

bool Trainer::eval_due(int64_t step) const {
  if (!eval_data_) return false;
  return step == options_.steps || (options_.eval_every > 0 && step % options_.eval_every == 0);
}

double Trainer::evaluate() {
  comm::Communicator& dp = mesh_->dp();
  const int64_t per_rank = options_.global_batch / dp.size();
  const int64_t batches = options_.eval_batches > 0
                              ? options_.eval_batches
                              : eval_data_->num_sequences() / options_.global_batch;
  const int64_t predicted = batches * options_.global_batch * (options_.seq_len - 1);
  double loss_sum = 0;
  for (int64_t b = 0; b < batches; ++b) {
    const Tensor tokens =
        eval_data_->sequences(b * options_.global_batch + dp.rank() * per_rank, per_rank);
    loss_sum += run_microbatches(tokens, 1.0f / static_cast<float>(predicted),
                                 /*forward_only=*/true);
  }
  // The forward left MoE routing statistics behind: they are not the next step's.
  for (auto [layer, moe] : model_->moe_layers()) (void)moe->take_counts();
  Tensor loss = Tensor::from_floats({static_cast<float>(loss_sum)}, {1});
  mesh_->dp_sp().all_reduce(loss);
  return loss.item() / static_cast<double>(predicted);
}

}  // namespace weft::train
