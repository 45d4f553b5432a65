// weft eval --model DIR --tokens FILE --out OUT.safetensors [--grads] [--comm-report FILE]
//           [--tp N] [--pp N] [--pp-virtual V] [--micro-batch M] [--sequence-parallel]
//
// Runs over any valid mesh: the batch (the file's lines) is split over dp ranks, the model over
// tp and pp. The loss is the mean over every predicted position of the whole batch, gradients
// are summed over dp, and logits and gradients are gathered to whole tensors on rank 0 — the
// output equals one rank's.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "comm/report.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/mesh_outputs.h"
#include "models/causal_lm.h"
#include "models/moe_block.h"
#include "parallel/grad_sync.h"
#include "runtime/core/status.h"
#include "runtime/io/safetensors.h"
#include "runtime/train/pipeline_executor.h"
#include "runtime/train/pipeline_schedule.h"
#include "runtime/train/token_data.h"

namespace weft::cli {
namespace {

struct EvalPlan {
  std::vector<int64_t> rows_of_dp;    // sequences per dp rank
  std::vector<Tensor> micro_batches;  // this rank's, [m, T] each
};

absl::StatusOr<EvalPlan> plan_batches(const Tensor& all_tokens, const parallel::Mesh& mesh,
                                      int64_t micro_batch, int pp_virtual) {
  const int64_t batch = all_tokens.dim(0);
  const parallel::ParallelDims& d = mesh.dims();
  if (batch < d.dp) {
    return invalid_argument("--tokens has ", batch, " sequences, fewer than the ", d.dp,
                            " data-parallel ranks");
  }
  EvalPlan plan;
  for (int r = 0; r < d.dp; ++r)
    plan.rows_of_dp.push_back(train::split_evenly(batch, d.dp, r).size());
  const train::Range mine = train::split_evenly(batch, d.dp, mesh.coord().dp);
  // Without --micro-batch each rank runs its rows as one micro-batch (dp ranks may differ by
  // one row when the batch does not split evenly).
  const int64_t micro = micro_batch > 0 ? micro_batch : mine.size();
  for (int64_t rows : plan.rows_of_dp) {
    if (micro_batch > 0 && rows % micro != 0) {
      return invalid_argument("--micro-batch ", micro, " does not divide the ", rows,
                              " sequences of a data-parallel rank");
    }
  }
  for (int64_t first = mine.begin; first < mine.end; first += micro) {
    plan.micro_batches.push_back(all_tokens.slice(first, first + micro));
  }
  WEFT_RETURN_IF_ERROR(
      train::pipeline_schedule({.pp = d.pp,
                                .pp_rank = mesh.coord().pp,
                                .virtual_chunks = pp_virtual,
                                .micro_batches = static_cast<int>(plan.micro_batches.size())})
          .status());
  return plan;
}

}  // namespace

absl::Status run_eval(Session& session, const Args& args) {
  std::vector<FlagSpec> specs = {
      {"model", FlagKind::kString, "Hugging Face model directory", true},
      {"tokens", FlagKind::kString, "token file: one sequence per line", true},
      {"out", FlagKind::kString, "output .safetensors (logits, loss, grads)", true},
      {"grads", FlagKind::kBool, "also write d loss / d parameter, by HF name"},
      {"comm-report", FlagKind::kString, "write per-rank traffic counters (JSON)"},
      {"seed", FlagKind::kInt, "seed of SpaCO's draw of chunks (default 0)"}};
  for (const FlagSpec& s : model_parallel_flags()) specs.push_back(s);
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(session, "eval",
                  "logits, loss and (with --grads) the gradient of every parameter", args, specs));
  absl::StatusOr<parallel::ParallelDims> dims = parallel::resolve_dims(
      session.size(), flags.integer("tp", 1), flags.integer("pp", 1), flags.integer("sp", 1),
      flags.integer("ep", 1), flags.integer("etp", 1));
  WEFT_RETURN_IF_ERROR(session.agree(dims.status()));
  absl::StatusOr<SpChoice> sp = parse_sp_choice(flags.str("sp-attn"), flags.str("sp-linear"),
                                                static_cast<int>(flags.integer("sp-ulysses", 1)));
  WEFT_RETURN_IF_ERROR(session.agree(sp.status()));
  absl::StatusOr<train::TokenFile> data = train::TokenFile::load(flags.str("tokens"));
  WEFT_RETURN_IF_ERROR(session.agree(data.status()));
  absl::StatusOr<MoePlacement> moe =
      moe_placement(flags.str("model"), flags.str("speculative-moe"), dims->ep);
  WEFT_RETURN_IF_ERROR(session.agree(moe.status()));
  std::unique_ptr<parallel::Mesh> mesh = parallel::Mesh::create(session.compute_world(), *dims);
  const bool sequence_parallel = flags.boolean("sequence-parallel");
  const int pp_virtual = static_cast<int>(flags.integer("pp-virtual", 1));
  const double capacity = flags.number("moe-capacity-factor", 0);
  const absl::StatusOr<models::Recompute> recompute =
      models::parse_recompute(flags.str("recompute"));
  WEFT_RETURN_IF_ERROR(session.agree(recompute.status()));
  if (!(flags.number("moe-aux-loss-coef", 0) >= 0)) {
    return session.agree(invalid_argument("--moe-aux-loss-coef ",
                                          flags.number("moe-aux-loss-coef", 0),
                                          " must be a finite number >= 0"));
  }
  if (flags.integer("seco", 0) > 0 && flags.number("moe-aux-loss-coef", 0) > 0) {
    return session.agree(seco_refuses_aux_loss());
  }
  absl::StatusOr<std::unique_ptr<models::CausalLM>> loaded = models::CausalLM::from_pretrained(
      flags.str("model"), {.mesh = mesh.get(),
                           .sequence_parallel = sequence_parallel,
                           .pp_virtual = pp_virtual,
                           .sp_attn = sp->attn,
                           .sp_linear = sp->linear,
                           .sp_ulysses = sp->ulysses,
                           .recompute = *recompute,
                           .streambp = flags.integer("streambp", 0),
                           .seco = flags.integer("seco", 0),
                           .spaco_keep = flags.integer("spaco-keep", 0),
                           .spaco_seed = static_cast<uint64_t>(flags.integer("seed", 0)),
                           .moe_capacity_factor = capacity,
                           .expert_placement = moe->placement,
                           .speculative_moe = moe->speculative});
  WEFT_RETURN_IF_ERROR(session.agree(loaded.status()));
  models::CausalLM& model = **loaded;
  const int64_t batch = data->num_sequences();
  const int64_t seq = data->seq_len();
  Tensor all_tokens = data->sequences(0, batch);  // [B, T]
  absl::Status valid = model.check_batch(all_tokens);
  if (valid.ok() && seq < 2)
    valid = invalid_argument("sequences of ", seq, " token cannot predict");
  if (valid.ok() && seq > model.config().max_position_embeddings) {
    valid = invalid_argument("the sequences of ", flags.str("tokens"), " have ", seq,
                             " tokens, more than the model's max_position_embeddings ",
                             model.config().max_position_embeddings);
  }
  absl::StatusOr<EvalPlan> plan =
      valid.ok() ? plan_batches(all_tokens, *mesh, flags.integer("micro-batch", 0), pp_virtual)
                 : absl::StatusOr<EvalPlan>(valid);
  WEFT_RETURN_IF_ERROR(session.agree(plan.status()));

  const bool grads = flags.boolean("grads");
  const int64_t global_predicted = batch * (seq - 1);
  std::vector<Tensor> logits_blocks;  // [m, T, V_r] per micro-batch, on the last stage
  model.set_logits_sink([&](Tensor logits) { logits_blocks.push_back(std::move(logits)); });
  if (grads) model.zero_grad();
  // The load-balancing loss, averaged over the micro-batches (every rank has as many).
  const double aux_coef = flags.number("moe-aux-loss-coef", 0);
  const auto micro = static_cast<double>(plan->micro_batches.size());
  for (auto [layer, moe] : model.moe_layers()) moe->set_aux_loss_scale(aux_coef / micro);
  absl::StatusOr<train::PipelineStepResult> step = train::run_pipeline_step(
      model, mesh.get(), plan->micro_batches,
      {.loss_scale = 1.0f / static_cast<float>(global_predicted), .forward_only = !grads});
  WEFT_RETURN_IF_ERROR(session.agree(step.status()));
  if (grads) {
    // Weights are replicated over dp and sp, expert-parallel ones over edp.
    std::vector<Tensor> dense, experts;
    for (models::Param* p : model.parameters()) {
      (p->expert_parallel() ? experts : dense).push_back(p->grad);
    }
    parallel::all_reduce_grads(mesh->dp_sp(), dense);
    parallel::all_reduce_grads(mesh->edp(), experts);
  }
  Tensor loss = Tensor::from_floats({static_cast<float>(step->loss_sum)}, {1});
  mesh->dp_sp().all_reduce(loss);
  double aux = 0;  // this stage's layers' terms, the same on each of its ranks
  for (auto [layer, moe] : model.moe_layers()) aux += moe->take_counts().aux;
  Tensor aux_sum = Tensor::from_floats({static_cast<float>(aux)}, {1});
  mesh->pp().all_reduce(aux_sum);
  const float aux_loss =
      aux_sum.item() / static_cast<float>(model.config().num_hidden_layers * micro);
  const float mean_loss = loss.item() / static_cast<float>(global_predicted);
  if (flags.has("comm-report")) {
    WEFT_RETURN_IF_ERROR(session.agree(
        comm::write_comm_report(session.world(), mesh->all_groups(), flags.str("comm-report"))));
  }

  Tensor logits = gather_logits(*mesh, logits_blocks, model.sp_positions(seq), seq,
                                model.config().vocab_size, plan->rows_of_dp);  // [B, T, V]
  std::map<std::string, Tensor> grad_of;
  if (grads) grad_of = gather_parameters(*mesh, model.parameters(), &models::Param::grad);
  if (!session.is_root()) return absl::OkStatus();
  io::NamedTensors tensors;
  tensors.emplace_back("logits", logits);
  tensors.emplace_back("loss", Tensor::from_floats({mean_loss}, {}));
  if (aux_coef > 0) tensors.emplace_back("moe_aux_loss", Tensor::from_floats({aux_loss}, {}));
  for (auto& [name, g] : grad_of) tensors.emplace_back(name, g);
  WEFT_RETURN_IF_ERROR(io::write_safetensors(flags.str("out"), tensors));
  std::printf("loss %.6f over %lld predicted tokens (%lld sequences x %lld, %s); wrote %s\n",
              mean_loss, static_cast<long long>(global_predicted), static_cast<long long>(batch),
              static_cast<long long>(seq), dims->str().c_str(), flags.str("out").c_str());
  return absl::OkStatus();
}

}  // namespace weft::cli
