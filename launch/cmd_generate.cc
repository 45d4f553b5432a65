// weft generate --model DIR --prompt-ids 1,2,3 --max-new-tokens N [--greedy | --temperature T
//               --top-p P --seed S]
// Prints the new token ids, comma-separated, on its last line.
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "launch/commands.h"
#include "launch/flags.h"
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

}  // namespace

absl::Status run_generate(Session& session, const Args& args) {
  WEFT_ASSIGN_OR_RETURN(
      Flags flags,
      parse_flags(session, "generate", "continue a prompt with a KV cache", args,
                  {{"model", FlagKind::kString, "Hugging Face model directory", true},
                   {"prompt-ids", FlagKind::kString, "comma-separated prompt token ids", true},
                   {"max-new-tokens", FlagKind::kInt, "tokens to generate", true, 1},
                   {"greedy", FlagKind::kBool, "take the most likely token (default: sample)"},
                   {"temperature", FlagKind::kFloat, "sampling temperature (default 1.0)"},
                   {"top-p", FlagKind::kFloat, "nucleus sampling mass (default 1.0)"},
                   {"seed", FlagKind::kInt, "sampling seed (default 0)"}}));
  absl::StatusOr<std::vector<int64_t>> prompt = parse_ids(flags.str("prompt-ids"));
  WEFT_RETURN_IF_ERROR(session.agree(prompt.status()));
  absl::StatusOr<std::unique_ptr<models::CausalLM>> model =
      models::CausalLM::from_pretrained(flags.str("model"));
  WEFT_RETURN_IF_ERROR(session.agree(model.status()));
  const int64_t max_positions = (*model)->config().max_position_embeddings;
  const int64_t total = static_cast<int64_t>(prompt->size()) + flags.integer("max-new-tokens");
  if (total > max_positions) {
    return session.agree(
        invalid_argument("the prompt's ", prompt->size(), " tokens + --max-new-tokens ",
                         flags.integer("max-new-tokens"), " = ", total,
                         " positions exceed the model's max_position_embeddings ", max_positions));
  }
  serve::SamplingOptions sampling;
  sampling.greedy = flags.boolean("greedy");
  sampling.temperature = static_cast<float>(flags.number("temperature", 1.0));
  sampling.top_p = static_cast<float>(flags.number("top-p", 1.0));
  sampling.seed = static_cast<uint64_t>(flags.integer("seed", 0));
  // Every rank computes the same continuation (same seed); rank 0 prints it.
  absl::StatusOr<std::vector<int64_t>> ids =
      serve::generate(**model, *prompt, flags.integer("max-new-tokens"), sampling);
  WEFT_RETURN_IF_ERROR(session.agree(ids.status()));
  if (session.is_root()) std::printf("%s\n", absl::StrJoin(*ids, ",").c_str());
  return absl::OkStatus();
}

}  // namespace weft::cli
