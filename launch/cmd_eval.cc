// weft eval --model DIR --tokens FILE --out OUT.safetensors [--grads] [--comm-report FILE]
//
// Data parallel over the world: the batch (the file's lines) is split over ranks; the loss is the
// mean over every predicted position of the whole batch, and gradients are summed over ranks,
// so the output equals one rank's.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "comm/report.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "models/causal_lm.h"
#include "parallel/grad_sync.h"
#include "runtime/core/status.h"
#include "runtime/io/safetensors.h"
#include "runtime/train/token_data.h"

namespace weft::cli {
namespace {

// Rank 0 receives every rank's rows of `local` [b_r, ...] into one [total, ...] tensor.
Tensor gather_rows_to_root(comm::Communicator& world, const Tensor& local, int64_t total) {
  if (world.size() == 1) return local;
  if (world.rank() != 0) {
    world.send(local, 0);
    return Tensor();
  }
  Shape shape = local.shape();
  shape[0] = total;
  Tensor all = Tensor::empty(shape, local.dtype());
  for (int r = 0; r < world.size(); ++r) {
    const train::Range rows = train::split_evenly(total, world.size(), r);
    Tensor part = all.slice(rows.begin, rows.end);
    if (r == 0) {
      part.copy_from(local);
    } else {
      world.recv(part, r);
    }
  }
  return all;
}

}  // namespace

absl::Status run_eval(Session& session, const Args& args) {
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(session, "eval", "logits, loss and (with --grads) the gradient of every parameter",
                  args,
                  {{"model", FlagKind::kString, "Hugging Face model directory", true},
                   {"tokens", FlagKind::kString, "token file: one sequence per line", true},
                   {"out", FlagKind::kString, "output .safetensors (logits, loss, grads)", true},
                   {"grads", FlagKind::kBool, "also write d loss / d parameter, by HF name"},
                   {"comm-report", FlagKind::kString, "write per-rank traffic counters (JSON)"}}));
  absl::StatusOr<train::TokenFile> data = train::TokenFile::load(flags.str("tokens"));
  WEFT_RETURN_IF_ERROR(session.agree(data.status()));
  absl::StatusOr<std::unique_ptr<models::CausalLM>> loaded =
      models::CausalLM::from_pretrained(flags.str("model"));
  WEFT_RETURN_IF_ERROR(session.agree(loaded.status()));
  models::CausalLM& model = **loaded;
  const int64_t batch = data->num_sequences();
  const int64_t seq = data->seq_len();
  Tensor all_tokens = data->sequences(0, batch);  // [B, T]
  absl::Status valid = model.check_tokens(all_tokens);
  if (valid.ok() && seq < 2) valid = invalid_argument("sequences of ", seq, " token cannot predict");
  if (valid.ok() && batch < session.size()) {
    valid = invalid_argument("--tokens has ", batch, " sequences, fewer than the ", session.size(),
                             " data-parallel ranks");
  }
  WEFT_RETURN_IF_ERROR(session.agree(valid));

  std::unique_ptr<comm::Communicator> dp = session.world().split(0, session.rank(), "dp");
  const train::Range mine = train::split_evenly(batch, dp->size(), dp->rank());
  Tensor tokens = all_tokens.slice(mine.begin, mine.end);  // [b, T]
  const bool grads = flags.boolean("grads");
  models::ForwardResult out = model.forward(tokens, {.keep_logits = true, .for_backward = grads});
  const int64_t global_predicted = batch * (seq - 1);
  if (grads) {
    model.zero_grad();
    model.backward(1.0f / static_cast<float>(global_predicted));
    std::vector<Tensor> g;
    for (models::Param* p : model.parameters()) g.push_back(p->grad);
    parallel::all_reduce_grads(*dp, g);
  }
  Tensor loss = Tensor::from_floats({static_cast<float>(out.loss_sum)}, {1});
  dp->all_reduce(loss);
  const float mean_loss = loss.item() / static_cast<float>(global_predicted);
  if (flags.has("comm-report")) {
    WEFT_RETURN_IF_ERROR(session.agree(
        comm::write_comm_report(session.world(), {dp.get()}, flags.str("comm-report"))));
  }

  Tensor logits = gather_rows_to_root(session.world(), out.logits, batch);  // [B, T, V] on rank 0
  if (!session.is_root()) return absl::OkStatus();
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.emplace_back("logits", logits);
  tensors.emplace_back("loss", Tensor::from_floats({mean_loss}, {}));
  if (grads) {
    for (models::Param* p : model.parameters()) tensors.emplace_back(p->name, p->grad);
  }
  WEFT_RETURN_IF_ERROR(io::write_safetensors(flags.str("out"), tensors));
  std::printf("loss %.6f over %lld predicted tokens (%lld sequences x %lld, %d rank%s); wrote %s\n",
              mean_loss, static_cast<long long>(global_predicted), static_cast<long long>(batch),
              static_cast<long long>(seq), session.size(), session.size() > 1 ? "s" : "",
              flags.str("out").c_str());
  return absl::OkStatus();
}

}  // namespace weft::cli
