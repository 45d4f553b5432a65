// weft generate --model DIR (--prompt-ids 1,2,3 | --prompt TEXT | --prompts-file FILE)
//               --max-new-tokens N [--greedy | --temperature T --top-p P --top-k K --seed S]
//               [--ignore-eos] [--tp N] [--pp N] [engine flags]
// Runs through the serving engine (docs/serving.md), so its tokens equal what `weft serve`
// returns for the same request. --prompt-ids prints the new ids, comma-separated, on one line;
// text prompts print one JSON object per prompt: {"text", "token_ids", "finish_reason"}.
// Generation stops at the model's EOS (generation_config.json / config.json) unless
// --ignore-eos. Models with linear-attention layers (no paged KV cache) take the contiguous
// KV-cached path: one prompt, one rank.
#include <cstdio>
#include <fstream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "launch/commands.h"
#include "launch/engine_setup.h"
#include "nlohmann/json.hpp"
#include "runtime/core/status.h"
#include "runtime/serve/generator.h"

namespace weft::cli {
namespace {

absl::StatusOr<std::vector<int64_t>> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return invalid_argument("--prompt-ids: '", std::string(part), "' is not a token id");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return invalid_argument("--prompt-ids is empty");
  return ids;
}

// The text prompts: --prompt, or one JSON string per line of --prompts-file.
absl::StatusOr<std::vector<std::string>> text_prompts(const Flags& flags) {
  if (flags.has("prompt")) return std::vector<std::string>{flags.str("prompt")};
  std::ifstream in(flags.str("prompts-file"));
  if (!in) {
    return invalid_argument("--prompts-file ", flags.str("prompts-file"), ": cannot read it");
  }
  std::vector<std::string> prompts;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_string()) {
      return invalid_argument("--prompts-file ", flags.str("prompts-file"), " line ", n,
                              ": not a JSON string");
    }
    prompts.push_back(j.get<std::string>());
  }
  if (prompts.empty()) {
    return invalid_argument("--prompts-file ", flags.str("prompts-file"), " has no prompts");
  }
  return prompts;
}

bool has_linear_attention(const std::string& dir) {
  std::ifstream in(dir + "/config.json");
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("layer_types") || !j["layer_types"].is_array()) return false;
  for (const auto& t : j["layer_types"]) {
    if (t.is_string() && t.get<std::string>() == "linear_attention") return true;
  }
  return false;
}

// The single-sequence contiguous-cache path, for models the paged engine cannot serve (linear
// attention keeps a per-request state, not per-token K/V).
absl::Status generate_contiguous(Session& session, const Flags& flags,
                                 const std::vector<int64_t>& prompt,
                                 const serve::SamplingOptions& sampling) {
  if (session.size() != 1 || flags.has("tp") || flags.has("pp")) {
    return session.agree(invalid_argument(
        "this model has linear-attention layers: generate runs it on one rank (no --tp/--pp)"));
  }
  absl::StatusOr<std::unique_ptr<models::CausalLM>> model =
      models::CausalLM::from_pretrained(flags.str("model"));
  WEFT_RETURN_IF_ERROR(model.status());
  const int64_t max_new = flags.integer("max-new-tokens");
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_new;
  const int64_t positions = (*model)->config().max_position_embeddings;
  if (total > positions) {
    return invalid_argument("the prompt's ", prompt.size(), " tokens + --max-new-tokens ", max_new,
                            " = ", total, " positions exceed the model's max_position_embeddings ",
                            positions);
  }
  absl::StatusOr<std::vector<int64_t>> ids = serve::generate(**model, prompt, max_new, sampling);
  WEFT_RETURN_IF_ERROR(ids.status());
  std::printf("%s\n", absl::StrJoin(*ids, ",").c_str());
  return absl::OkStatus();
}

struct Result {
  std::vector<int64_t> ids;
  std::string text;
  std::string finish_reason;
};

}  // namespace

absl::Status run_generate(Session& session, const Args& args) {
  std::vector<FlagSpec> specs = {
      {"model", FlagKind::kString, "Hugging Face model directory", true},
      {"prompt-ids", FlagKind::kString, "comma-separated prompt token ids"},
      {"prompt", FlagKind::kString, "a text prompt (needs the model's tokenizer)"},
      {"prompts-file", FlagKind::kString, "text prompts, one JSON string per line"},
      {"max-new-tokens", FlagKind::kInt, "tokens to generate at most", true, 1},
      {"greedy", FlagKind::kBool, "take the most likely token (default: sample)"},
      {"temperature", FlagKind::kFloat, "sampling temperature (default 1.0)"},
      {"top-p", FlagKind::kFloat, "nucleus sampling mass (default 1.0)"},
      {"top-k", FlagKind::kInt, "sample among the k most likely tokens (default: all)", false, 0},
      {"seed", FlagKind::kInt, "sampling seed (default 0)"},
      {"ignore-eos", FlagKind::kBool, "do not stop at the model's end-of-sequence tokens"}};
  for (const FlagSpec& s : engine_flags()) specs.push_back(s);
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(session, "generate", "continue prompts through the serving engine", args, specs));
  const int sources = flags.has("prompt-ids") + flags.has("prompt") + flags.has("prompts-file");
  if (sources != 1) {
    return session.agree(
        invalid_argument("give exactly one of --prompt-ids, --prompt, --prompts-file"));
  }
  serve::SamplingOptions sampling;
  sampling.greedy = flags.boolean("greedy");
  sampling.temperature = static_cast<float>(flags.number("temperature", 1.0));
  sampling.top_p = static_cast<float>(flags.number("top-p", 1.0));
  sampling.top_k = static_cast<int>(flags.integer("top-k", 0));
  sampling.seed = static_cast<uint64_t>(flags.integer("seed", 0));
  WEFT_RETURN_IF_ERROR(session.agree(serve::validate(sampling)));
  const int64_t max_new = flags.integer("max-new-tokens");
  std::vector<int64_t> id_prompt;
  if (flags.has("prompt-ids")) {
    absl::StatusOr<std::vector<int64_t>> ids = parse_ids(flags.str("prompt-ids"));
    WEFT_RETURN_IF_ERROR(session.agree(ids.status()));
    id_prompt = *ids;
    if (has_linear_attention(flags.str("model"))) {
      return generate_contiguous(session, flags, id_prompt, sampling);
    }
  }
  if (flags.has("prefill-ranks") || flags.has("decode-ranks")) {
    return session.agree(invalid_argument(
        "--prefill-ranks/--decode-ranks: disaggregated prefill and decode is for weft serve"));
  }
  WEFT_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(session, flags, /*max_queue=*/1 << 20));
  if (!session.is_root()) {
    setup.engine->run_worker();
    return absl::OkStatus();
  }
  // Rank 0: encode, check, submit everything, run to the end, print in prompt order.
  std::vector<std::vector<int64_t>> prompts;
  absl::Status status;
  if (!id_prompt.empty()) {
    prompts.push_back(id_prompt);
  } else {
    absl::StatusOr<std::vector<std::string>> texts = text_prompts(flags);
    status = texts.status();
    if (status.ok() && setup.tokenizer == nullptr) {
      status = invalid_argument(flags.str("model"),
                                " has no tokenizer (tokenizer.json or tokenizer.model): use "
                                "--prompt-ids");
    }
    if (status.ok()) {
      for (const std::string& t : *texts) {
        const std::vector<int32_t> ids = setup.tokenizer->encode(t, /*add_special_tokens=*/true);
        prompts.emplace_back(ids.begin(), ids.end());
      }
    }
  }
  serve::GenerationParams params;
  params.max_tokens = max_new;
  params.temperature = sampling.greedy ? 0.0f : sampling.temperature;
  params.top_p = sampling.top_p;
  params.top_k = sampling.top_k;
  params.seed = sampling.seed;
  params.ignore_eos = flags.boolean("ignore-eos");
  std::map<int64_t, Result> results;
  std::vector<int64_t> order;
  for (size_t i = 0; status.ok() && i < prompts.size(); ++i) {
    const std::vector<int64_t>& prompt = prompts[i];
    if (std::optional<serve::Engine::Invalid> bad = setup.engine->check(prompt, params)) {
      const int64_t total = static_cast<int64_t>(prompt.size()) + max_new;
      status = bad->param == "max_tokens"
                   ? invalid_argument("the prompt's ", prompt.size(), " tokens + --max-new-tokens ",
                                      max_new, " = ", total,
                                      " positions exceed the model's max_position_embeddings ",
                                      setup.engine->max_model_len())
                   : invalid_argument("prompt ", i + 1, ": ", bad->message);
      break;
    }
    absl::StatusOr<int64_t> id =
        setup.engine->submit(prompt, params, [&results](const serve::RequestUpdate& u) {
          Result& r = results[u.request];
          for (const serve::GeneratedToken& t : u.tokens) r.ids.push_back(t.id);
          r.text += u.text;
          if (u.finished) r.finish_reason = u.finish_reason;
        });
    status = id.status();
    if (id.ok()) order.push_back(*id);
  }
  setup.engine->run_until_done();  // also releases the other ranks
  WEFT_RETURN_IF_ERROR(status);
  for (int64_t id : order) {
    const Result& r = results[id];
    if (!id_prompt.empty()) {
      std::printf("%s\n", absl::StrJoin(r.ids, ",").c_str());
    } else {
      const nlohmann::json line = {
          {"text", r.text}, {"token_ids", r.ids}, {"finish_reason", r.finish_reason}};
      std::printf("%s\n", line.dump().c_str());
    }
  }
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace weft::cli
