#include "models/model_layout.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "models/sharding.h"
#include "runtime/core/status.h"

namespace weft::models {

namespace {

absl::Status check_divides(int tp, int64_t size, const char* what) {
  if (size % tp == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--tp ", tp, " does not divide ", what, " ", size));
}

absl::Status check_tensor_parallel(const io::ModelConfig& c, int tp, bool experts_over_tp) {
  WEFT_RETURN_IF_ERROR(check_divides(tp, c.num_attention_heads, "num_attention_heads"));
  const int64_t kv = c.num_key_value_heads;
  if (tp > kv && tp % kv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " exceeds num_key_value_heads ", kv,
                     " and is not a multiple of it (KV heads are replicated tp/kv times)"));
  }
  if (tp <= kv) WEFT_RETURN_IF_ERROR(check_divides(tp, kv, "num_key_value_heads"));
  if (!c.is_moe()) {
    WEFT_RETURN_IF_ERROR(check_divides(tp, c.intermediate_size, "intermediate_size"));
  } else if (experts_over_tp) {
    WEFT_RETURN_IF_ERROR(check_divides(tp, c.intermediate_size, "the experts' intermediate_size"));
  }
  // Any vocabulary is padded to a multiple of tp, but every rank must hold some of it: the last
  // rank's block starts at (tp - 1) * ceil(V / tp), which reaches V only when V <= (tp - 1)^2.
  const ShardExtent last = shard_extent(c.vocab_size, TpContext{tp, tp - 1}.vocab());
  if (last.length <= 0) {
    const int64_t block = shard_extent(c.vocab_size, TpContext{tp, 0}.vocab()).length;
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp ", tp, " leaves tp rank ", tp - 1, " no rows of vocab_size ", c.vocab_size,
        " (each rank takes ceil(", c.vocab_size, "/", tp, ") = ", block, " ids)"));
  }
  return absl::OkStatus();
}

bool has_layer(const io::ModelConfig& c, io::LayerType type) {
  return std::find(c.layer_types.begin(), c.layer_types.end(), type) != c.layer_types.end();
}

// The sequence split and the algorithms' constraints (refused before any work).
absl::Status plan_sequence_parallel(const io::ModelConfig& c, const ParallelOptions& parallel,
                                    ModelLayout& layout) {
  const parallel::Mesh& mesh = *parallel.mesh;
  layout.sp = mesh.dims().sp;
  layout.sp_rank = mesh.coord().sp;
  layout.sp_group = &mesh.sp();
  layout.sp_attn = parallel.sp_attn;
  layout.sp_linear = parallel.sp_linear;
  layout.sp_ulysses = parallel.sp_ulysses;
  const int sp = layout.sp;
  const bool softmax = has_layer(c, io::LayerType::kFullAttention);
  const bool linear = has_layer(c, io::LayerType::kLinearAttention);
  const std::string attn = absl::StrCat("--sp-attn ", parallel::sp_attn_name(parallel.sp_attn));
  if (parallel.sp_attn == parallel::SpAttnAlgo::kUsp &&
      (parallel.sp_ulysses < 1 || sp % parallel.sp_ulysses != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--sp-ulysses ", parallel.sp_ulysses,
                                                   " does not divide --sp ", sp, " (", attn, ")"));
  }
  const int64_t heads = c.num_attention_heads / layout.tp.size;
  const int ulysses = parallel.sp_attn == parallel::SpAttnAlgo::kUlysses ? sp
                      : parallel.sp_attn == parallel::SpAttnAlgo::kUsp   ? parallel.sp_ulysses
                                                                         : 1;
  if (softmax && heads < ulysses) {
    return absl::InvalidArgumentError(
        absl::StrCat(attn, " splits the ", heads, " query heads of each tp rank over ", ulysses,
                     " ranks: it needs at least as many heads as ranks"));
  }
  layout.sp_layout = softmax ? parallel::preferred_layout(parallel.sp_attn, sp, ulysses)
                             : parallel::SpLayout{sp, 1};
  const parallel::SpLayout& l = layout.sp_layout;
  if (linear && parallel.sp_linear == parallel::SpLinearAlgo::kZeco && !l.contiguous() &&
      l.groups != sp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sp-linear zeco cannot follow the sequence layout of ", attn, " (zigzag over ", l.groups,
        " ring groups of ", sp / l.groups, " ranks): use --sp-linear lasp2"));
  }
  return absl::OkStatus();
}

// The MoE view of the stage and the capacity's constraint (it needs whole sequences).
absl::Status plan_experts(const io::ModelConfig& c, const ParallelOptions& parallel,
                          ModelLayout& layout) {
  const parallel::Mesh& mesh = *parallel.mesh;
  const parallel::ParallelDims& dims = mesh.dims();
  ExpertContext& x = layout.experts;
  x.ep = dims.ep;
  x.ep_rank = mesh.coord().ep;
  x.ep_group = dims.ep > 1 ? &mesh.ep() : nullptr;
  x.etp = dims.etp;
  x.etp_rank = mesh.coord().etp;
  x.etp_group = dims.etp > 1 ? &mesh.etp() : nullptr;
  x.edp_rank = mesh.coord().edp;
  x.capacity_factor = parallel.moe_capacity_factor;
  x.placement = parallel.expert_placement;
  for (comm::Communicator* g : {&mesh.tp_sp(), &mesh.dp()}) {
    if (g->size() > 1) x.token_groups.push_back(g);
  }
  if (parallel.moe_capacity_factor > 0 && c.is_moe()) {
    if (dims.sp > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--moe-capacity-factor applies per whole sequence: it cannot run with --sp ", dims.sp));
    }
    if (x.dispatches() && dims.tp > 1 && parallel.sequence_parallel) {
      return absl::InvalidArgumentError(
          "--moe-capacity-factor applies per whole sequence: with --ep/--etp it cannot run with "
          "--sequence-parallel (each tp rank routes its own block of the sequence)");
    }
  }
  if (parallel.speculative_moe) {
    if (!x.dispatches() || dims.etp != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--speculative-moe needs --ep above 1 and --etp 1 (got --ep ", dims.ep,
                       " --etp ", dims.etp, ")"));
    }
    x.speculative = true;
    for (int rank : parallel::group_ranks(mesh.rank(), parallel::Group::kTp, dims)) {
      x.tp_ep.push_back(parallel::coord_of(rank, dims).ep);
    }
  }
  for (const std::vector<int64_t>& perm : x.placement) {
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t e = 0; e < static_cast<int64_t>(sorted.size()); ++e) {
      if (sorted[e] != e || static_cast<int64_t>(sorted.size()) != c.num_local_experts) {
        return absl::InvalidArgumentError(
            absl::StrCat("an expert placement is not a permutation of the model's ",
                         c.num_local_experts, " experts"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status check_mesh_fits(const io::ModelConfig& config, const parallel::ParallelDims& dims,
                             int pp_virtual) {
  const bool dispatch = dims.ep * dims.etp > 1;
  if (dispatch && !config.is_moe()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ep ", dims.ep, " --etp ", dims.etp, ": the model has no MoE layers"));
  }
  if (dispatch) {
    if (config.num_local_experts % dims.ep != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--ep ", dims.ep, " does not divide num_local_experts ", config.num_local_experts));
    }
    if (config.intermediate_size % dims.etp != 0) {
      return absl::InvalidArgumentError(absl::StrCat("--etp ", dims.etp,
                                                     " does not divide the experts' "
                                                     "intermediate_size ",
                                                     config.intermediate_size));
    }
  }
  WEFT_RETURN_IF_ERROR(check_tensor_parallel(config, dims.tp, !dispatch));
  return parallel::stage_layers(static_cast<int>(config.num_hidden_layers), dims.pp, pp_virtual, 0)
      .status();
}

namespace {

// StreamBP and SeCO cut each sequence into chunks of positions on one rank: the sequence must
// be whole there, and each chunk's rows must route as the whole sequence did.
absl::Status check_chunked(const ParallelOptions& parallel, const parallel::ParallelDims& dims) {
  const char* flag = parallel.seco > 0 ? "--seco" : "--streambp";
  if (parallel.streambp == 0 && parallel.seco == 0) return absl::OkStatus();
  if (dims.sp > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " with --sp ", dims.sp, ": ", flag,
        "'s chunks need whole sequences on a rank, and --sp splits them (each chunk would attend "
        "across ranks); use --recompute full with --sp"));
  }
  if (parallel.seco > 0 && parallel.sequence_parallel && dims.tp > 1) {
    return absl::InvalidArgumentError(
        "--seco with --sequence-parallel: SeCO's chunks take positions of whole sequences "
        "through every layer, and Megatron sequence parallelism splits the residual stream's "
        "rows over tp; use plain --tp (--streambp composes with --sequence-parallel)");
  }
  if (parallel.seco > 0 && dims.pp > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--seco with --pp ", dims.pp,
        ": SeCO runs every layer for one chunk before the next chunk, which a pipeline stage "
        "cannot; use --streambp with --pp"));
  }
  return absl::OkStatus();
}

// TokenWeave in training (weft train sets sequence_parallel with it): the whole model in two
// halves of whole sequences over tp >= 2, every layer's activations kept.
absl::Status check_training_weave(const io::ModelConfig& config, const ParallelOptions& parallel) {
  if (!parallel.token_weave || !parallel.sequence_parallel) return absl::OkStatus();
  const int tp = parallel.mesh != nullptr ? parallel.mesh->dims().tp : 1;
  if (tp < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--token-weave needs --tp 2 or more: it overlaps the tensor-parallel collectives with "
        "compute, and --tp ",
        tp, " has none"));
  }
  if (config.is_moe()) {
    return absl::InvalidArgumentError(
        "--token-weave trains dense models only: an MoE layer's routing (expert capacity, "
        "load-balancing loss) spans the whole micro-batch, which TokenWeave runs as two halves");
  }
  if (parallel.streambp > 0 || parallel.seco > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token-weave with ", parallel.seco > 0 ? "--seco" : "--streambp",
                     ": both reorder every layer's backward; choose one"));
  }
  if (parallel.recompute == Recompute::kFull) {
    return absl::InvalidArgumentError(
        "--token-weave with --recompute full: TokenWeave keeps every layer's activations of "
        "both halves; use --recompute selective or none");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelLayout> plan_layout(const io::ModelConfig& config,
                                        const ParallelOptions& parallel) {
  ModelLayout layout;
  layout.mesh = parallel.mesh;
  const int layers = static_cast<int>(config.num_hidden_layers);
  if (!(parallel.moe_capacity_factor >= 0) || !std::isfinite(parallel.moe_capacity_factor)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--moe-capacity-factor ", parallel.moe_capacity_factor, " must be a finite number >= 0"));
  }
  layout.experts.capacity_factor = parallel.moe_capacity_factor;
  if (parallel.seco < 0 || parallel.spaco_keep < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--seco ", parallel.seco, " --spaco-keep ",
                                                   parallel.spaco_keep, " must be >= 1"));
  }
  if (parallel.seco > 0 && parallel.streambp > 0) {
    return absl::InvalidArgumentError(
        "--seco with --streambp: choose one; SeCO already runs the head and every layer chunk by "
        "chunk");
  }
  if (parallel.spaco_keep > 0 && parallel.seco == 0) {
    return absl::InvalidArgumentError(
        "--spaco-keep needs --seco CHUNK: SpaCO back-propagates some of SeCO's chunks");
  }
  const int64_t chunked = parallel.seco > 0 ? parallel.seco : parallel.streambp;
  if (chunked > 0 && parallel.moe_capacity_factor > 0 && config.is_moe()) {
    return absl::InvalidArgumentError(absl::StrCat(
        parallel.seco > 0 ? "--seco" : "--streambp", " with --moe-capacity-factor ",
        parallel.moe_capacity_factor,
        ": an expert's capacity drops choices in the order of the whole sequence, which a chunk "
        "of positions does not see; chunk-wise training needs dropless MoE"));
  }
  if (parallel.seco > 0 && parallel.pp_virtual > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--seco with --pp-virtual ", parallel.pp_virtual,
                     ": SeCO runs the whole model for one chunk at a time, in one pipeline chunk"));
  }
  WEFT_RETURN_IF_ERROR(check_training_weave(config, parallel));
  layout.token_weave = parallel.token_weave;
  layout.seco = parallel.seco;
  layout.spaco_keep = parallel.spaco_keep;
  layout.spaco_seed = parallel.spaco_seed;
  layout.recompute = parallel.recompute;
  if (parallel.streambp < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--streambp ", parallel.streambp, " must be a chunk size >= 1"));
  }
  layout.streambp = parallel.streambp;
  if (parallel.mesh == nullptr) {
    WEFT_ASSIGN_OR_RETURN(layout.chunks, parallel::stage_layers(layers, 1, parallel.pp_virtual, 0));
    layout.stages = parallel.pp_virtual;
    return layout;
  }
  const parallel::ParallelDims& dims = parallel.mesh->dims();
  WEFT_RETURN_IF_ERROR(check_mesh_fits(config, dims, parallel.pp_virtual));
  WEFT_ASSIGN_OR_RETURN(layout.chunks, parallel::stage_layers(layers, dims.pp, parallel.pp_virtual,
                                                              parallel.mesh->coord().pp));
  layout.tp = {dims.tp, parallel.mesh->coord().tp, &parallel.mesh->tp()};
  WEFT_RETURN_IF_ERROR(plan_experts(config, parallel, layout));
  if (parallel.token_weave && (dims.pp > 1 || layout.experts.dispatches() || dims.sp > 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--token-weave runs over tp alone (got --pp ",
                                                   dims.pp, " --ep ", dims.ep, " --etp ", dims.etp,
                                                   " --sp ", dims.sp, ")"));
  }
  layout.sequence_parallel = parallel.sequence_parallel;
  if (dims.sp > 1) WEFT_RETURN_IF_ERROR(plan_sequence_parallel(config, parallel, layout));
  WEFT_RETURN_IF_ERROR(check_chunked(parallel, dims));
  layout.pp = dims.pp;
  layout.pp_rank = parallel.mesh->coord().pp;
  layout.stages = dims.pp * parallel.pp_virtual;
  return layout;
}

}  // namespace weft::models
