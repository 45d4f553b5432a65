// A Jinja-subset interpreter for chat templates (tokenizer_config.json's `chat_template`).
// The oracle is @huggingface/jinja (npm), not Python's Jinja2: its default lstrip_blocks and
// trim_blocks, its operator precedence, and its printing of numbers ("1", "1.0"), booleans
// ("true"), none (nothing) and lists/dicts (JSON with ", " and ": ") are reproduced exactly.
//
// Known differences from the oracle: upper/lower map ASCII, Latin-1, Greek and Cyrillic only;
// tojson(sort_keys=true) approximates localeCompare; a printed function is "function", not its
// JavaScript source; object keys keep insertion order even when they look like array indices.
// Extensions (the oracle fails on them): the Jinja2 filters count, round and e/escape.
//
// Pass JSON as nlohmann::ordered_json where key order matters (tool schemas printed with
// `tojson` keep their key order, as JavaScript objects and Python dicts do); nlohmann::json
// sorts keys.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace weft::serve::jinja {

struct Node;

// A parsed template: immutable, cheap to copy, and safe to render from several threads at once
// (each render has its own scopes and values).
class Template {
 public:
  // Parse errors: InvalidArgument "chat template line N: <what>".
  static absl::StatusOr<Template> parse(std::string_view source);

  // `context` must be an object; its keys become variables. Render errors (raise_exception,
  // type errors, unknown filters, output over 16 MiB or too many steps): InvalidArgument
  // "chat template line N: <message>".
  absl::StatusOr<std::string> render(const nlohmann::json& context) const;
  absl::StatusOr<std::string> render(const nlohmann::ordered_json& context) const;

 private:
  explicit Template(std::shared_ptr<const Node> root) : root_(std::move(root)) {}
  std::shared_ptr<const Node> root_;
};

}  // namespace weft::serve::jinja

namespace weft::serve {

// Renders a chat template with the variables HF's apply_chat_template passes: messages, tools
// (omitted when null), add_generation_prompt, bos_token, eos_token, plus the keys of `extra`
// (e.g. enable_thinking). Parses the template on every call; hold a jinja::Template to reuse
// one. Prefer the ordered_json overload for request bodies: nlohmann::json sorts object keys,
// so `tools | tojson` would print schemas in an order no client sent.
absl::StatusOr<std::string> render_chat_template(
    std::string_view source, const nlohmann::json& messages, const nlohmann::json& tools,
    bool add_generation_prompt, const std::string& bos_token, const std::string& eos_token,
    const nlohmann::json& extra = nlohmann::json::object());
absl::StatusOr<std::string> render_chat_template(
    std::string_view source, const nlohmann::ordered_json& messages,
    const nlohmann::ordered_json& tools, bool add_generation_prompt, const std::string& bos_token,
    const std::string& eos_token,
    const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

}  // namespace weft::serve
