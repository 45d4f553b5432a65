#include "models/model_layout.h"

#include <algorithm>
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

absl::Status check_tensor_parallel(const io::ModelConfig& c, int tp) {
  WEFT_RETURN_IF_ERROR(check_divides(tp, c.num_attention_heads, "num_attention_heads"));
  const int64_t kv = c.num_key_value_heads;
  if (tp > kv && tp % kv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " exceeds num_key_value_heads ", kv,
                     " and is not a multiple of it (KV heads are replicated tp/kv times)"));
  }
  if (tp <= kv) WEFT_RETURN_IF_ERROR(check_divides(tp, kv, "num_key_value_heads"));
  WEFT_RETURN_IF_ERROR(
      check_divides(tp, c.intermediate_size,
                    c.is_moe() ? "the experts' intermediate_size" : "intermediate_size"));
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

}  // namespace

absl::Status check_mesh_fits(const io::ModelConfig& config, const parallel::ParallelDims& dims,
                             int pp_virtual) {
  if (dims.ep != 1) {
    return absl::UnimplementedError(
        absl::StrCat("--ep ", dims.ep, ": the model has no expert-parallel MoE yet"));
  }
  WEFT_RETURN_IF_ERROR(check_tensor_parallel(config, dims.tp));
  return parallel::stage_layers(static_cast<int>(config.num_hidden_layers), dims.pp, pp_virtual, 0)
      .status();
}

absl::StatusOr<ModelLayout> plan_layout(const io::ModelConfig& config,
                                        const ParallelOptions& parallel) {
  ModelLayout layout;
  layout.mesh = parallel.mesh;
  const int layers = static_cast<int>(config.num_hidden_layers);
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
  layout.sequence_parallel = parallel.sequence_parallel;
  if (dims.sp > 1) WEFT_RETURN_IF_ERROR(plan_sequence_parallel(config, parallel, layout));
  layout.pp = dims.pp;
  layout.pp_rank = parallel.mesh->coord().pp;
  layout.stages = dims.pp * parallel.pp_virtual;
  return layout;
}

}  // namespace weft::models
