#include "models/model_layout.h"

#include "absl/strings/str_cat.h"
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
  return check_divides(tp, c.vocab_size, "vocab_size");
}

}  // namespace

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
  if (dims.sp != 1) {
    return absl::UnimplementedError(
        absl::StrCat("--sp ", dims.sp, ": the model has no sequence-parallel attention yet"));
  }
  if (dims.ep != 1) {
    return absl::UnimplementedError(
        absl::StrCat("--ep ", dims.ep, ": the model has no expert-parallel MoE yet"));
  }
  WEFT_RETURN_IF_ERROR(check_tensor_parallel(config, dims.tp));
  WEFT_ASSIGN_OR_RETURN(layout.chunks, parallel::stage_layers(layers, dims.pp, parallel.pp_virtual,
                                                              parallel.mesh->coord().pp));
  layout.tp = {dims.tp, parallel.mesh->coord().tp, &parallel.mesh->tp()};
  layout.sequence_parallel = parallel.sequence_parallel;
  layout.pp = dims.pp;
  layout.pp_rank = parallel.mesh->coord().pp;
  layout.stages = dims.pp * parallel.pp_virtual;
  return layout;
}

}  // namespace weft::models
