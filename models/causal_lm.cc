// The CausalLM factories: a model from a Hugging Face directory, or randomly initialised, laid
// over the mesh of ParallelOptions.
#include "models/causal_lm.h"

#include <functional>
#include <utility>

#include "models/model_layout.h"
#include "models/param_init.h"
#include "models/transformer.h"
#include "models/weight_shapes.h"
#include "runtime/core/allocator.h"
#include "runtime/core/status.h"
#include "runtime/io/safetensors.h"

namespace weft::models {

namespace {

// Replaces every parameter's value with its shard of the tensor in `weights` (converted to f32;
// check_weights_match_config vetted names, shapes and dtypes). Only the shard is copied out of
// the (memory-mapped) file.
absl::Status load_parameters(const io::WeightSource& weights, const std::vector<Param*>& params) {
  for (Param* p : params) {
    WEFT_ASSIGN_OR_RETURN(const Tensor whole, weights.get(p->name));  // zero-copy view
    p->value = take_shard(whole, p->spec, p->value.shape());
  }
  return absl::OkStatus();
}

// Runs `build` (which allocates the model), turning an allocation the machine cannot satisfy
// into an ordinary error naming the tensor and its size.
absl::StatusOr<std::unique_ptr<CausalLM>> allocating(
    const std::function<absl::StatusOr<std::unique_ptr<CausalLM>>()>& build) {
  try {
    return build();
  } catch (const AllocationError& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate the model: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<Recompute> parse_recompute(const std::string& name) {
  if (name.empty() || name == "none") return Recompute::kNone;
  if (name == "selective") return Recompute::kSelective;
  if (name == "full") return Recompute::kFull;
  return invalid_argument("--recompute '", name, "': choose none, selective or full");
}

absl::StatusOr<std::unique_ptr<CausalLM>> CausalLM::from_pretrained(
    const std::string& model_dir, const ParallelOptions& parallel) {
  WEFT_ASSIGN_OR_RETURN(io::ModelConfig config, io::load_model_config(model_dir));
  WEFT_ASSIGN_OR_RETURN(ModelLayout layout, plan_layout(config, parallel));
  WEFT_ASSIGN_OR_RETURN(const io::WeightSource weights, io::WeightSource::open(model_dir));
  WEFT_RETURN_IF_ERROR(check_weights_match_config(config, weights));  // before any allocation
  return allocating([&]() -> absl::StatusOr<std::unique_ptr<CausalLM>> {
    auto model = std::make_unique<Transformer>(std::move(config), std::move(layout));
    WEFT_RETURN_IF_ERROR(load_parameters(weights, model->parameters()));
    return model;
  });
}

absl::StatusOr<std::unique_ptr<CausalLM>> CausalLM::from_config(const io::ModelConfig& config,
                                                                uint64_t seed,
                                                                const ParallelOptions& parallel) {
  // Round-trip through config.json: the same validation and defaults as a model directory.
  WEFT_ASSIGN_OR_RETURN(io::ModelConfig checked,
                        io::parse_model_config(io::model_config_to_json(config)));
  WEFT_ASSIGN_OR_RETURN(ModelLayout layout, plan_layout(checked, parallel));
  return allocating([&]() -> absl::StatusOr<std::unique_ptr<CausalLM>> {
    auto model = std::make_unique<Transformer>(std::move(checked), std::move(layout));
    init_parameters(model->parameters(), seed);
    return model;
  });
}

}  // namespace weft::models
