#include "runtime/serve/jinja.h"

#include "runtime/core/status.h"
#include "runtime/serve/jinja_interpreter.h"

namespace weft::serve::jinja {
namespace {

absl::Status template_error(const TemplateError& e) {
  return invalid_argument("chat template line ", e.line, ": ", e.what());
}

template <typename Json>
absl::StatusOr<std::string> render_json(const Node& root, const Json& context) {
  if (!context.is_object()) return invalid_argument("chat template context must be a JSON object");
  try {
    Interpreter interpreter;
    for (auto it = context.begin(); it != context.end(); ++it) {
      interpreter.declare(it.key(), Value::from_json(it.value()));
    }
    return interpreter.run(root);
  } catch (const TemplateError& e) {
    return template_error(e);
  } catch (const std::exception& e) {  // a bug here must not take down the server
    return invalid_argument("chat template: ", e.what());
  }
}

}  // namespace

absl::StatusOr<Template> Template::parse(std::string_view source) {
  try {
    return Template(std::shared_ptr<const Node>(parse_template(source)));
  } catch (const TemplateError& e) {
    return template_error(e);
  } catch (const std::exception& e) {
    return invalid_argument("chat template: ", e.what());
  }
}

absl::StatusOr<std::string> Template::render(const nlohmann::json& context) const {
  return render_json(*root_, context);
}

absl::StatusOr<std::string> Template::render(const nlohmann::ordered_json& context) const {
  return render_json(*root_, context);
}

}  // namespace weft::serve::jinja

namespace weft::serve {
namespace {

template <typename Json>
absl::StatusOr<std::string> render_chat(std::string_view source, const Json& messages,
                                        const Json& tools, bool add_generation_prompt,
                                        const std::string& bos_token, const std::string& eos_token,
                                        const Json& extra) {
  if (!extra.is_null() && !extra.is_object()) {
    return invalid_argument("chat template extra variables must be a JSON object");
  }
  WEFT_ASSIGN_OR_RETURN(jinja::Template tmpl, jinja::Template::parse(source));
  Json context = Json::object();
  context["messages"] = messages;
  if (!tools.is_null()) context["tools"] = tools;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token;
  context["eos_token"] = eos_token;
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) context[it.key()] = it.value();
  }
  return tmpl.render(context);
}

}  // namespace

absl::StatusOr<std::string> render_chat_template(
    std::string_view source, const nlohmann::json& messages, const nlohmann::json& tools,
    bool add_generation_prompt, const std::string& bos_token, const std::string& eos_token,
    const nlohmann::json& extra) {
  return render_chat(source, messages, tools, add_generation_prompt, bos_token, eos_token, extra);
}

absl::StatusOr<std::string> render_chat_template(
    std::string_view source, const nlohmann::ordered_json& messages,
    const nlohmann::ordered_json& tools, bool add_generation_prompt, const std::string& bos_token,
    const std::string& eos_token, const nlohmann::ordered_json& extra) {
  return render_chat(source, messages, tools, add_generation_prompt, bos_token, eos_token, extra);
}

}  // namespace weft::serve
