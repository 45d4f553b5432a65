// The CausalLM factories: a model from a Hugging Face directory, or randomly initialised, laid
// over the mesh of ParallelOptions.
#include "models/causal_lm.h"

#include <utility>

#include "models/model_layout.h"
#include "models/param_init.h"
#include "models/transformer.h"
#include "runtime/core/status.h"
#include "runtime/io/safetensors.h"

namespace weft::models {

namespace {

// Replaces every parameter's value with its shard of the tensor in `weights` (converted to f32),
// after checking that it is there and has the shape config.json implies. Only the shard is
// copied out of the (memory-mapped) file.
absl::Status load_parameters(const io::WeightSource& weights, const std::vector<Param*>& params) {
  for (Param* p : params) {
    if (!weights.contains(p->name)) {
      return absl::NotFoundError(absl::StrCat("tensor ", p->name,
                                              " is missing from the weights in ", weights.dir(),
                                              " (config.json needs it)"));
    }
    WEFT_ASSIGN_OR_RETURN(const io::TensorInfo info, weights.info(p->name));
    if (info.shape != p->spec.global_shape) {
      return invalid_argument("tensor ", p->name, " has shape ", shape_str(info.shape), " in ",
                              weights.dir(), " but config.json implies ",
                              shape_str(p->spec.global_shape));
    }
    if (!is_floating(info.dtype)) {
      return invalid_argument("tensor ", p->name, " in ", weights.dir(), " is ",
                              std::string(dtype_name(info.dtype)), ", expected F32, BF16 or F16");
    }
    WEFT_ASSIGN_OR_RETURN(const Tensor whole, weights.get(p->name));  // zero-copy view
    p->value = take_shard(whole, p->spec, p->value.shape());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CausalLM>> CausalLM::from_pretrained(
    const std::string& model_dir, const ParallelOptions& parallel) {
  WEFT_ASSIGN_OR_RETURN(io::ModelConfig config, io::load_model_config(model_dir));
  WEFT_ASSIGN_OR_RETURN(ModelLayout layout, plan_layout(config, parallel));
  WEFT_ASSIGN_OR_RETURN(const io::WeightSource weights, io::WeightSource::open(model_dir));
  auto model = std::make_unique<Transformer>(std::move(config), std::move(layout));
  WEFT_RETURN_IF_ERROR(load_parameters(weights, model->parameters()));
  return model;
}

absl::StatusOr<std::unique_ptr<CausalLM>> CausalLM::from_config(const io::ModelConfig& config,
                                                                uint64_t seed,
                                                                const ParallelOptions& parallel) {
  // Round-trip through config.json: the same validation and defaults as a model directory.
  WEFT_ASSIGN_OR_RETURN(io::ModelConfig checked,
                        io::parse_model_config(io::model_config_to_json(config)));
  WEFT_ASSIGN_OR_RETURN(ModelLayout layout, plan_layout(checked, parallel));
  auto model = std::make_unique<Transformer>(std::move(checked), std::move(layout));
  init_parameters(model->parameters(), seed);
  return model;
}

}  // namespace weft::models
