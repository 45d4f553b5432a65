// Renders chat templates with weft's interpreter for tests/node/chat_template_oracle_test.mjs.
// stdin: one JSON object per line {template, messages, tools, add_generation_prompt, bos_token,
// eos_token, extra}; stdout: one JSON object per line, {"ok": true, "text": ...} or
// {"ok": false, "error": ...}. Exits 1 if any line failed to render.
#include <iostream>
#include <string>

#include "runtime/serve/jinja.h"

int main() {
  using nlohmann::ordered_json;
  std::string line;
  int status = 0;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    ordered_json result;
    try {
      ordered_json in = ordered_json::parse(line);
      auto text = weft::serve::render_chat_template(
          in.at("template").get<std::string>(), in.value("messages", ordered_json::array()),
          in.value("tools", ordered_json()), in.value("add_generation_prompt", false),
          in.value("bos_token", std::string()), in.value("eos_token", std::string()),
          in.value("extra", ordered_json::object()));
      if (text.ok()) {
        result = {{"ok", true}, {"text", *text}};
      } else {
        result = {{"ok", false}, {"error", std::string(text.status().message())}};
      }
    } catch (const nlohmann::json::exception& e) {
      result = {{"ok", false}, {"error", std::string("bad input line: ") + e.what()}};
    }
    if (!result["ok"].get<bool>()) status = 1;
    std::cout << result.dump(-1, ' ', false, ordered_json::error_handler_t::replace) << "\n";
  }
  return status;
}
