// Hugging Face config.json -> ModelConfig. Fields that would change the math and that weft does
// not implement (other activations, partial rotary embeddings, LongRoPE, sliding windows,
// dropout, o_proj/MLP biases) are refused rather than ignored, so a model never runs silently
// wrong.
#include "runtime/io/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"

namespace weft::io {
namespace {

using nlohmann::json;

// transformers' class defaults for the fields a config.json may leave out.
struct Architecture {
  const char* name;
  const char* model_type;
  int64_t max_position_embeddings;
  double rms_norm_eps;
  double rope_theta;
};
constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", 2048, 1e-6, 10000.0},
    {"Qwen2ForCausalLM", "qwen2", 32768, 1e-6, 10000.0},
    {"MixtralForCausalLM", "mixtral", 131072, 1e-5, 1e6},
};

constexpr const char* kFullAttention = "full_attention";
constexpr const char* kLinearAttention = "linear_attention";

// Typed access to the top-level keys; a key holding null counts as absent (HF writes nulls).
class Fields {
 public:
  explicit Fields(const json& object) : object_(object) {}

  [[nodiscard]] bool has(const char* key) const {
    return object_.contains(key) && !object_[key].is_null();
  }
  [[nodiscard]] const json& at(const char* key) const { return object_[key]; }

  absl::StatusOr<int64_t> integer(const char* key) const {
    if (!has(key)) return invalid_argument("missing required field \"", key, "\"");
    const json& value = object_[key];
    if (!value.is_number_integer()) {
      return invalid_argument("field ", key, " must be an integer, got ", value.dump());
    }
    return value.get<int64_t>();
  }
  absl::StatusOr<int64_t> integer_or(const char* key, int64_t fallback) const {
    return has(key) ? integer(key) : fallback;
  }
  absl::StatusOr<double> number(const char* key) const {
    if (!has(key)) return invalid_argument("missing required field \"", key, "\"");
    return number_or(key, 0.0);
  }
  absl::StatusOr<double> number_or(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_[key];
    if (!value.is_number()) {
      return invalid_argument("field ", key, " must be a number, got ", value.dump());
    }
    return value.get<double>();
  }
  absl::StatusOr<bool> boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_[key];
    if (!value.is_boolean()) {
      return invalid_argument("field ", key, " must be true or false, got ", value.dump());
    }
    return value.get<bool>();
  }
  absl::StatusOr<std::string> string_or(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_[key];
    if (!value.is_string()) {
      return invalid_argument("field ", key, " must be a string, got ", value.dump());
    }
    return value.get<std::string>();
  }

 private:
  const json& object_;
};

absl::StatusOr<const Architecture*> find_architecture(const Fields& fields) {
  std::string name;
  if (fields.has("architectures")) {
    const json& list = fields.at("architectures");
    if (!list.is_array() || list.empty() || !list[0].is_string()) {
      return invalid_argument("field architectures must be a non-empty list of names, got ",
                              list.dump());
    }
    name = list[0].get<std::string>();
    for (const Architecture& a : kArchitectures) {
      if (name == a.name) return &a;
    }
  } else {
    WEFT_ASSIGN_OR_RETURN(std::string model_type, fields.string_or("model_type", ""));
    if (model_type.empty()) {
      return invalid_argument("config.json names no architectures and no model_type");
    }
    for (const Architecture& a : kArchitectures) {
      if (model_type == a.model_type) return &a;
    }
    name = absl::StrCat("model_type ", model_type);
  }
  return invalid_argument("unsupported architecture \"", name,
                          "\" (expected LlamaForCausalLM, Qwen2ForCausalLM or MixtralForCausalLM,"
                          " or model_type llama, qwen2 or mixtral)");
}

// partial_rotary_factor (top level, or inside rope_parameters in transformers 5).
absl::Status check_whole_rotary(const Fields& fields) {
  WEFT_ASSIGN_OR_RETURN(double partial, fields.number_or("partial_rotary_factor", 1.0));
  if (partial != 1.0) {
    return invalid_argument("partial_rotary_factor ", partial,
                            " is not supported (weft rotates the whole head dim; expected 1)");
  }
  return absl::OkStatus();
}

// Refuses the settings that would change the math.
absl::Status check_supported(const Fields& fields, const std::string& architecture) {
  WEFT_ASSIGN_OR_RETURN(std::string act, fields.string_or("hidden_act", "silu"));
  if (act != "silu") {
    return invalid_argument("hidden_act \"", act, "\" is not supported (expected \"silu\")");
  }
  WEFT_RETURN_IF_ERROR(check_whole_rotary(fields));
  WEFT_ASSIGN_OR_RETURN(double dropout, fields.number_or("attention_dropout", 0.0));
  if (dropout != 0.0) {
    return invalid_argument("attention_dropout ", dropout, " is not supported (expected 0)");
  }
  WEFT_ASSIGN_OR_RETURN(bool mlp_bias, fields.boolean_or("mlp_bias", false));
  if (mlp_bias) return invalid_argument("mlp_bias true is not supported (expected false)");
  if (architecture == "LlamaForCausalLM") {
    WEFT_ASSIGN_OR_RETURN(bool bias, fields.boolean_or("attention_bias", false));
    if (bias) {
      return invalid_argument(
          "attention_bias true is not supported for LlamaForCausalLM (it adds an o_proj bias)");
    }
  }
  if (architecture == "Qwen2ForCausalLM") {
    WEFT_ASSIGN_OR_RETURN(bool sliding, fields.boolean_or("use_sliding_window", false));
    if (sliding) {
      return invalid_argument("use_sliding_window true is not supported (expected false)");
    }
  }
  if (architecture == "MixtralForCausalLM") {
    if (fields.has("sliding_window")) {
      return invalid_argument("sliding_window ", fields.at("sliding_window").dump(),
                              " is not supported (expected null)");
    }
    WEFT_ASSIGN_OR_RETURN(double jitter, fields.number_or("router_jitter_noise", 0.0));
    if (jitter != 0.0) {
      return invalid_argument("router_jitter_noise ", jitter, " is not supported (expected 0)");
    }
  }
  return absl::OkStatus();
}

constexpr std::pair<const char*, RopeType> kRopeTypes[] = {
    {"default", RopeType::kDefault}, {"linear", RopeType::kLinear}, {"dynamic", RopeType::kDynamic},
    {"yarn", RopeType::kYarn},       {"llama3", RopeType::kLlama3},
};

// Where the RoPE settings live: `rope_scaling` (transformers 4; transformers 5 still reads it
// first), else `rope_parameters` (transformers 5). Null when the config has neither.
const char* rope_key(const Fields& fields) {
  if (fields.has("rope_scaling")) return "rope_scaling";
  if (fields.has("rope_parameters")) return "rope_parameters";
  return nullptr;
}

// transformers >= 5 keeps rope_theta inside rope_parameters.
absl::StatusOr<double> read_rope_theta(const Fields& fields, double fallback) {
  WEFT_ASSIGN_OR_RETURN(double top, fields.number_or("rope_theta", fallback));
  if (!fields.has("rope_parameters") || !fields.at("rope_parameters").is_object()) return top;
  return Fields(fields.at("rope_parameters")).number_or("rope_theta", top);
}

// The fields of one type, as transformers' _compute_*_parameters read them (defaults included).
absl::StatusOr<RopeScaling> read_rope_fields(const Fields& in, RopeType type,
                                             int64_t max_positions) {
  RopeScaling r;
  r.type = type;
  WEFT_RETURN_IF_ERROR(check_whole_rotary(in));
  if (type == RopeType::kDefault) return r;
  WEFT_ASSIGN_OR_RETURN(r.factor, in.number("factor"));
  if (!(r.factor > 0)) return invalid_argument("factor must be positive, got ", r.factor);
  if (type == RopeType::kLlama3) {
    WEFT_ASSIGN_OR_RETURN(r.original_max_position_embeddings,
                          in.integer("original_max_position_embeddings"));
    WEFT_ASSIGN_OR_RETURN(r.low_freq_factor, in.number("low_freq_factor"));
    WEFT_ASSIGN_OR_RETURN(r.high_freq_factor, in.number("high_freq_factor"));
    if (!(0 < r.low_freq_factor && r.low_freq_factor < r.high_freq_factor)) {
      return invalid_argument("low_freq_factor ", r.low_freq_factor, " and high_freq_factor ",
                              r.high_freq_factor, " must satisfy 0 < low < high");
    }
  }
  if (type == RopeType::kYarn) {
    WEFT_ASSIGN_OR_RETURN(r.original_max_position_embeddings,
                          in.integer_or("original_max_position_embeddings", max_positions));
    // transformers: `get("beta_fast") or 32`, so 0 also means the default.
    WEFT_ASSIGN_OR_RETURN(const double beta_fast, in.number_or("beta_fast", 0.0));
    WEFT_ASSIGN_OR_RETURN(const double beta_slow, in.number_or("beta_slow", 0.0));
    if (beta_fast != 0.0) r.beta_fast = beta_fast;
    if (beta_slow != 0.0) r.beta_slow = beta_slow;
    if (!(r.beta_fast > 0 && r.beta_slow > 0)) {
      return invalid_argument("beta_fast ", r.beta_fast, " and beta_slow ", r.beta_slow,
                              " must be positive");
    }
    WEFT_ASSIGN_OR_RETURN(r.truncate, in.boolean_or("truncate", true));
    WEFT_ASSIGN_OR_RETURN(const double mscale, in.number_or("mscale", 0.0));
    WEFT_ASSIGN_OR_RETURN(const double mscale_all_dim, in.number_or("mscale_all_dim", 0.0));
    const auto get_mscale = [&](double m) {
      return r.factor <= 1 ? 1.0 : 0.1 * m * std::log(r.factor) + 1.0;
    };
    const double derived = mscale != 0.0 && mscale_all_dim != 0.0
                               ? get_mscale(mscale) / get_mscale(mscale_all_dim)
                               : get_mscale(1.0);
    WEFT_ASSIGN_OR_RETURN(r.attention_factor, in.number_or("attention_factor", derived));
  }
  const bool has_original = type == RopeType::kLlama3 || type == RopeType::kYarn;
  if (has_original && r.original_max_position_embeddings <= 0) {
    return invalid_argument("original_max_position_embeddings must be positive, got ",
                            r.original_max_position_embeddings);
  }
  return r;
}

absl::StatusOr<RopeScaling> read_rope_scaling(const Fields& fields, int64_t max_positions) {
  const char* key = rope_key(fields);
  if (key == nullptr) return RopeScaling{};
  const json& object = fields.at(key);
  if (!object.is_object()) {
    return invalid_argument("field ", key, " must be an object, got ", object.dump());
  }
  const Fields in(object);
  // transformers: rope_type, else the legacy `type`; rope_parameters defaults to "default".
  const char* type_key = in.has("rope_type") ? "rope_type" : "type";
  WEFT_ASSIGN_OR_RETURN(std::string type, in.string_or(type_key, ""));
  if (type.empty() && std::string(key) == "rope_parameters") type = "default";
  if (type.empty()) {
    return invalid_argument(key, " ", object.dump(),
                            " names no type (expected \"rope_type\" or \"type\")");
  }
  for (const auto& [name, value] : kRopeTypes) {
    if (type != name) continue;
    absl::StatusOr<RopeScaling> r = read_rope_fields(in, value, max_positions);
    if (!r.ok()) {
      return invalid_argument(key, " (", type_key, " \"", type, "\"): ", r.status().message());
    }
    return r;
  }
  return invalid_argument(
      key, ".", type_key, " \"", type,
      "\" is not supported (expected default, linear, dynamic, yarn or llama3)");
}

// rope_scaling for a config made in code (null for plain RoPE).
nlohmann::ordered_json rope_scaling_json(const RopeScaling& r) {
  if (r.type == RopeType::kDefault) return nullptr;
  nlohmann::ordered_json out = {{"rope_type", rope_type_name(r.type)}, {"factor", r.factor}};
  if (r.type == RopeType::kLlama3) {
    out["low_freq_factor"] = r.low_freq_factor;
    out["high_freq_factor"] = r.high_freq_factor;
    out["original_max_position_embeddings"] = r.original_max_position_embeddings;
  }
  if (r.type == RopeType::kYarn) {
    out["original_max_position_embeddings"] = r.original_max_position_embeddings;
    out["attention_factor"] = r.attention_factor;
    out["beta_fast"] = r.beta_fast;
    out["beta_slow"] = r.beta_slow;
    out["truncate"] = r.truncate;
  }
  return out;
}

// True when config.json's text gives the RoPE `c` holds (rope_theta and rope_scaling), so that
// an export can keep the source's keys exactly as they were.
bool source_rope_matches(const ModelConfig& c) {
  if (c.json.empty()) return false;
  const json source = json::parse(c.json, nullptr, /*allow_exceptions=*/false);
  if (!source.is_object()) return false;
  const Fields f(source);
  const absl::StatusOr<const Architecture*> arch = find_architecture(f);
  if (!arch.ok()) return false;
  const absl::StatusOr<int64_t> max_positions =
      f.integer_or("max_position_embeddings", (*arch)->max_position_embeddings);
  if (!max_positions.ok()) return false;
  const absl::StatusOr<double> theta = read_rope_theta(f, (*arch)->rope_theta);
  const absl::StatusOr<RopeScaling> scaling = read_rope_scaling(f, *max_positions);
  return theta.ok() && scaling.ok() && *theta == c.rope_theta && *scaling == c.rope_scaling;
}

absl::StatusOr<std::vector<LayerType>> read_layer_types(const Fields& fields, int64_t layers) {
  if (!fields.has("layer_types")) return std::vector<LayerType>(layers, LayerType::kFullAttention);
  const json& list = fields.at("layer_types");
  if (!list.is_array()) {
    return invalid_argument("field layer_types must be a list, got ", list.dump());
  }
  if (static_cast<int64_t>(list.size()) != layers) {
    return invalid_argument("layer_types has ", list.size(),
                            " entries, expected num_hidden_layers ", layers);
  }
  std::vector<LayerType> types;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string entry = list[i].is_string() ? list[i].get<std::string>() : list[i].dump();
    if (entry == kFullAttention) {
      types.push_back(LayerType::kFullAttention);
    } else if (entry == kLinearAttention) {
      types.push_back(LayerType::kLinearAttention);
    } else {
      return invalid_argument("layer_types[", i, "] is \"", entry, "\", expected \"",
                              kFullAttention, "\" or \"", kLinearAttention, "\"");
    }
  }
  return types;
}

absl::Status validate(const ModelConfig& c, bool head_dim_given) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"max_position_embeddings", c.max_position_embeddings},
  };
  for (const auto& [name, value] : sizes) {
    if (value <= 0) return invalid_argument(name, " must be positive, got ", value);
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return invalid_argument("num_attention_heads ", c.num_attention_heads,
                            " is not divisible by num_key_value_heads ", c.num_key_value_heads);
  }
  if (!head_dim_given && c.hidden_size % c.num_attention_heads != 0) {
    return invalid_argument("hidden_size ", c.hidden_size,
                            " is not divisible by num_attention_heads ", c.num_attention_heads,
                            " (and there is no head_dim)");
  }
  if (c.head_dim <= 0) return invalid_argument("head_dim must be positive, got ", c.head_dim);
  if (c.head_dim % 2 != 0) {
    return invalid_argument("head_dim ", c.head_dim, " must be even (RoPE rotates pairs)");
  }
  if (!(c.rms_norm_eps > 0))
    return invalid_argument("rms_norm_eps must be positive, got ", c.rms_norm_eps);
  if (!(c.rope_theta > 0))
    return invalid_argument("rope_theta must be positive, got ", c.rope_theta);
  if (c.rope_scaling.type == RopeType::kDynamic && c.head_dim <= 2) {
    return invalid_argument("dynamic rope_scaling needs head_dim > 2 (its base exponent is ",
                            "dim / (dim - 2)), got ", c.head_dim);
  }
  if (c.architecture == "MixtralForCausalLM") {
    if (c.num_local_experts <= 0) {
      return invalid_argument("num_local_experts must be positive, got ", c.num_local_experts);
    }
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.num_local_experts) {
      return invalid_argument("num_experts_per_tok ", c.num_experts_per_tok,
                              " must be in [1, num_local_experts ", c.num_local_experts, "]");
    }
  }
  return absl::OkStatus();
}

absl::Status with_prefix(const absl::Status& status, const std::string& prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
}

}  // namespace

const char* rope_type_name(RopeType type) {
  for (const auto& [name, value] : kRopeTypes) {
    if (value == type) return name;
  }
  return "default";
}

bool ModelConfig::has_linear_attention() const {
  return std::find(layer_types.begin(), layer_types.end(), LayerType::kLinearAttention) !=
         layer_types.end();
}

absl::StatusOr<ModelConfig> parse_model_config(const std::string& json_text) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    return invalid_argument("config.json is not valid JSON: ", e.what());
  }
  if (!root.is_object()) return invalid_argument("config.json is not a JSON object");
  const Fields f(root);
  WEFT_ASSIGN_OR_RETURN(const Architecture* arch, find_architecture(f));
  WEFT_RETURN_IF_ERROR(check_supported(f, arch->name));

  ModelConfig c;
  c.architecture = arch->name;
  c.json = json_text;
  WEFT_ASSIGN_OR_RETURN(c.vocab_size, f.integer("vocab_size"));
  WEFT_ASSIGN_OR_RETURN(c.hidden_size, f.integer("hidden_size"));
  WEFT_ASSIGN_OR_RETURN(c.intermediate_size, f.integer("intermediate_size"));
  WEFT_ASSIGN_OR_RETURN(c.num_hidden_layers, f.integer("num_hidden_layers"));
  WEFT_ASSIGN_OR_RETURN(c.num_attention_heads, f.integer("num_attention_heads"));
  WEFT_ASSIGN_OR_RETURN(c.num_key_value_heads,
                        f.integer_or("num_key_value_heads", c.num_attention_heads));
  const bool head_dim_given = f.has("head_dim");
  const int64_t heads = c.num_attention_heads > 0 ? c.num_attention_heads : 1;
  WEFT_ASSIGN_OR_RETURN(c.head_dim, f.integer_or("head_dim", c.hidden_size / heads));
  WEFT_ASSIGN_OR_RETURN(c.max_position_embeddings,
                        f.integer_or("max_position_embeddings", arch->max_position_embeddings));
  WEFT_ASSIGN_OR_RETURN(c.rms_norm_eps, f.number_or("rms_norm_eps", arch->rms_norm_eps));
  WEFT_ASSIGN_OR_RETURN(c.rope_theta, read_rope_theta(f, arch->rope_theta));
  WEFT_ASSIGN_OR_RETURN(c.rope_scaling, read_rope_scaling(f, c.max_position_embeddings));
  WEFT_ASSIGN_OR_RETURN(c.tie_word_embeddings, f.boolean_or("tie_word_embeddings", false));
  // Qwen2 always has q/k/v biases; Llama's attention_bias=true is refused in check_supported.
  c.attention_bias = c.architecture == "Qwen2ForCausalLM";
  if (c.architecture == "MixtralForCausalLM") {
    WEFT_ASSIGN_OR_RETURN(c.num_local_experts, f.integer_or("num_local_experts", 8));
    WEFT_ASSIGN_OR_RETURN(c.num_experts_per_tok, f.integer_or("num_experts_per_tok", 2));
    WEFT_ASSIGN_OR_RETURN(c.router_aux_loss_coef, f.number_or("router_aux_loss_coef", 0.001));
  }
  WEFT_RETURN_IF_ERROR(validate(c, head_dim_given));
  WEFT_ASSIGN_OR_RETURN(c.layer_types, read_layer_types(f, c.num_hidden_layers));
  return c;
}

absl::StatusOr<ModelConfig> load_model_config(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  WEFT_ASSIGN_OR_RETURN(std::string text, read_file(path));
  absl::StatusOr<ModelConfig> config = parse_model_config(text);
  if (!config.ok()) return with_prefix(config.status(), path);
  return config;
}

std::string model_config_to_json(const ModelConfig& c) {
  // Start from the text the config came from, so keys weft does not model (token ids, dtype)
  // survive an export; the keys weft does model are rewritten from `c`.
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  if (!c.json.empty()) {
    out = nlohmann::ordered_json::parse(c.json, nullptr, /*allow_exceptions=*/false);
    if (!out.is_object()) out = nlohmann::ordered_json::object();
  }
  const Architecture* arch = &kArchitectures[0];
  for (const Architecture& a : kArchitectures) {
    if (c.architecture == a.name) arch = &a;
  }
  out["architectures"] = {c.architecture};
  out["model_type"] = arch->model_type;
  out["hidden_act"] = "silu";
  out["vocab_size"] = c.vocab_size;
  out["hidden_size"] = c.hidden_size;
  out["intermediate_size"] = c.intermediate_size;
  out["num_hidden_layers"] = c.num_hidden_layers;
  out["num_attention_heads"] = c.num_attention_heads;
  out["num_key_value_heads"] = c.num_key_value_heads;
  out["head_dim"] = c.head_dim;
  out["max_position_embeddings"] = c.max_position_embeddings;
  out["rms_norm_eps"] = c.rms_norm_eps;
  out["rope_theta"] = c.rope_theta;
  if (source_rope_matches(c)) {
    if (!out.contains("rope_scaling")) out["rope_scaling"] = nullptr;
  } else {
    out.erase("rope_parameters");
    out["rope_scaling"] = rope_scaling_json(c.rope_scaling);
  }
  out["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.architecture == "LlamaForCausalLM") out["attention_bias"] = false;
  if (c.architecture == "Qwen2ForCausalLM") out["use_sliding_window"] = false;
  if (c.is_moe()) {
    out["num_local_experts"] = c.num_local_experts;
    out["num_experts_per_tok"] = c.num_experts_per_tok;
    out["router_aux_loss_coef"] = c.router_aux_loss_coef;
    out["sliding_window"] = nullptr;
  }
  out.erase("layer_types");
  if (c.has_linear_attention()) {
    nlohmann::ordered_json types = nlohmann::ordered_json::array();
    for (LayerType t : c.layer_types) {
      types.push_back(t == LayerType::kLinearAttention ? kLinearAttention : kFullAttention);
    }
    out["layer_types"] = types;
  }
  return out.dump(2) + "\n";
}

}  // namespace weft::io
