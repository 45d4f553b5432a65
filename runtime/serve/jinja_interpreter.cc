#include "runtime/serve/jinja_interpreter.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <optional>

namespace weft::serve::jinja {
namespace {

constexpr int64_t kMaxSteps = 2'000'000;  // real chat templates take thousands
constexpr double kMaxRange = 100'000;

struct BreakSignal {};
struct ContinueSignal {};

enum Special { kCaller = 1, kKwargs = 2, kVarargs = 4 };

// Which of caller/kwargs/varargs a macro body mentions without declaring them.
int special_arguments(const Node& node) {
  int found = 0;
  if (node.kind == NodeKind::kIdentifier) {
    if (node.str == "caller") found |= kCaller;
    if (node.str == "kwargs") found |= kKwargs;
    if (node.str == "varargs") found |= kVarargs;
  }
  for (const Node* child : {node.x.get(), node.y.get(), node.z.get()}) {
    if (child) found |= special_arguments(*child);
  }
  for (const auto* list : {&node.a, &node.b}) {
    for (const auto& child : *list) {
      if (child) found |= special_arguments(*child);
    }
  }
  return found;
}

int macro_special_arguments(const std::vector<std::unique_ptr<Node>>& params,
                            const std::vector<std::unique_ptr<Node>>& body) {
  int found = 0;
  for (const auto& statement : body) found |= special_arguments(*statement);
  for (const auto& param : params) {
    if (param->str == "caller") found &= ~kCaller;
    if (param->str == "kwargs") found &= ~kKwargs;
    if (param->str == "varargs") found &= ~kVarargs;
  }
  return found;
}

std::string strftime_now(const std::string& format) {
  static const char* kMonths[] = {"January",   "February", "March",    "April",
                                  "May",       "June",     "July",     "August",
                                  "September", "October",  "November", "December"};
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  auto pad2 = [](int n) { return (n < 10 ? "0" : "") + std::to_string(n); };
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%' || i + 1 >= format.size()) {
      out += format[i];
      continue;
    }
    char c = format[i + 1];
    std::string month = kMonths[tm.tm_mon];
    switch (c) {
      case 'Y':
        out += std::to_string(tm.tm_year + 1900);
        break;
      case 'm':
        out += pad2(tm.tm_mon + 1);
        break;
      case 'd':
        out += pad2(tm.tm_mday);
        break;
      case 'b':
        out += month.substr(0, 3);
        break;
      case 'B':
        out += month;
        break;
      case 'H':
        out += pad2(tm.tm_hour);
        break;
      case 'M':
        out += pad2(tm.tm_min);
        break;
      case '%':
        out += '%';
        break;
      default:
        out += format.substr(i, 2);
    }
    ++i;
  }
  return out;
}

}  // namespace

Value Env::lookup(const std::string& name) const {
  for (const Env* env = this; env; env = env->parent_) {
    if (const Value* v = env->local(name)) return *v;
  }
  return Value{};
}

const Value* Env::local(const std::string& name) const {
  auto it = vars_.find(name);
  return it == vars_.end() ? nullptr : &it->second;
}

const Value* Args::get(size_t i, const std::string& name) const {
  if (i < positional.size()) return &positional[i];
  return keywords.find(name);
}

Args split_args(const Values& args) {
  Args out;
  out.positional = args;
  if (!args.empty() && args.back().kind == Kind::kKwargs) {
    out.keywords = *args.back().object;
    out.positional.pop_back();
  }
  return out;
}

Interpreter::Interpreter() {
  globals_ = new_env(nullptr);
  globals_->set("true", Value::of_bool(true));
  globals_->set("false", Value::of_bool(false));
  globals_->set("none", Value::null());
  globals_->set("True", Value::of_bool(true));
  globals_->set("False", Value::of_bool(false));
  globals_->set("None", Value::null());
  globals_->set("raise_exception", Value::of_function([this](Values& args, Env*) -> Value {
                  fail(args.empty() ? "undefined" : to_raw_string(args[0]));
                }));
  globals_->set("range", Value::of_function([this](Values& args, Env*) {
                  for (const Value& a : args) {
                    if (!a.is_number()) fail("range() arguments must be numbers");
                  }
                  if (args.empty()) fail("range() needs at least one argument");
                  double start = 0, stop = args[0].number, step = 1;
                  if (args.size() > 1) {
                    start = args[0].number;
                    stop = args[1].number;
                  }
                  if (args.size() > 2) step = args[2].number;
                  if (step == 0) fail("range() step must not be zero");
                  if (std::fabs((stop - start) / step) > kMaxRange) fail("range() too long");
                  Values out;
                  for (double i = start; step > 0 ? i < stop : i > stop; i += step) {
                    out.push_back(i == std::trunc(i) ? Value::of_int(i) : Value::of_float(i));
                  }
                  return Value::of_array(std::move(out));
                }));
  globals_->set("strftime_now", Value::of_function([this](Values& args, Env*) {
                  if (args.empty() || args[0].kind != Kind::kString) {
                    fail("strftime_now() needs a format string");
                  }
                  return Value::of_string(strftime_now(args[0].str));
                }));
  globals_->set("namespace", Value::of_function([this](Values& args, Env*) {
                  Args a = split_args(args);
                  if (a.positional.size() > 1)
                    fail("namespace() takes at most 1 positional argument");
                  Object entries;
                  if (a.positional.size() == 1) {
                    const Value& source = a.positional[0];
                    if (source.is_object()) {
                      entries = *source.object;
                    } else if (source.is_array()) {
                      for (const Value& pair : *source.array) {
                        if (!pair.is_array() || pair.array->size() != 2 ||
                            (*pair.array)[0].kind != Kind::kString) {
                          fail("namespace() expected an object or [key, value] pairs");
                        }
                        entries.set((*pair.array)[0].str, (*pair.array)[1]);
                      }
                    } else {
                      fail(std::string("'") + kind_name(source.kind) + "' object is not iterable");
                    }
                  }
                  for (auto& [k, v] : a.keywords.entries) entries.set(k, v);
                  return Value::of_object(std::move(entries), Kind::kNamespace);
                }));
}

void Interpreter::declare(const std::string& name, Value value) {
  if (globals_->has_local(name)) fail("Variable already declared: " + name);
  globals_->set(name, std::move(value));
}

Env* Interpreter::new_env(Env* parent) { return &envs_.emplace_back(parent); }

void Interpreter::step() {
  if (++steps_ > kMaxSteps) fail("template exceeded its step limit (an endless loop?)");
}

void Interpreter::enter() {
  if (++depth_ > kMaxDepth) fail("template nesting too deep (recursive macro?)");
}

Value Interpreter::checked_string(std::string s) {
  if (s.size() > kMaxOutputBytes) fail("string longer than 16 MiB");
  return Value::of_string(std::move(s));
}

void Interpreter::append(std::string& out, std::string_view text) {
  out += text;
  if (out.size() > kMaxOutputBytes) fail("template output exceeds 16 MiB");
}

std::string Interpreter::run(const Node& program) {
  std::string out;
  try {
    render_block(program.a, globals_, out);
  } catch (const BreakSignal&) {
    fail("break outside a loop");
  } catch (const ContinueSignal&) {
    fail("continue outside a loop");
  }
  return out;
}

void Interpreter::render_block(const std::vector<std::unique_ptr<Node>>& body, Env* env,
                               std::string& out) {
  enter();
  for (const auto& statement : body) {
    const Node& node = *statement;
    line_ = node.line;
    step();
    switch (node.kind) {
      case NodeKind::kText:
        append(out, node.str);
        break;
      case NodeKind::kIf:
        render_block(eval(*node.x, env).truthy() ? node.a : node.b, env, out);
        break;
      case NodeKind::kFor:
        render_for(node, env, out);
        break;
      case NodeKind::kSet:
        execute_set(node, env);
        break;
      case NodeKind::kComment:
        break;
      case NodeKind::kMacro:
        define_macro(node, env);
        break;
      case NodeKind::kBreak:
        throw BreakSignal{};
      case NodeKind::kContinue:
        throw ContinueSignal{};
      default: {
        Value v = node.kind == NodeKind::kCallBlock ? call_block(node, env) : eval(node, env);
        if (!v.is_nullish()) append(out, to_display(v));
      }
    }
  }
  --depth_;
}

void Interpreter::render_for(const Node& node, Env* env, std::string& out) {
  Env* scope = new_env(env);
  const Node* filter = nullptr;
  Value iterable;
  if (node.y->kind == NodeKind::kSelect) {
    iterable = eval(*node.y->x, scope);
    filter = node.y->y.get();
  } else {
    iterable = eval(*node.y, scope);
  }
  line_ = node.line;
  Values candidates;
  if (iterable.is_array()) {
    candidates = *iterable.array;
  } else if (iterable.is_object()) {
    for (const auto& [k, v] : iterable.object->entries) candidates.push_back(Value::of_string(k));
  } else {
    fail(std::string("Expected iterable or object type in for loop: got ") +
         kind_name(iterable.kind));
  }
  const Node& loopvar = *node.x;
  auto bind = [&](const Value& item, Env* target) {
    if (loopvar.kind == NodeKind::kIdentifier) {
      target->set(loopvar.str, item);
      return;
    }
    for (size_t j = 0; j < loopvar.a.size(); ++j) {
      if (loopvar.a[j]->kind != NodeKind::kIdentifier) fail("cannot unpack to a non-identifier");
      target->set(loopvar.a[j]->str, j < item.array->size() ? (*item.array)[j] : Value{});
    }
  };
  Values items;
  for (const Value& item : candidates) {
    if (loopvar.kind == NodeKind::kTuple) {
      if (item.kind != Kind::kArray) {
        fail(std::string("Cannot unpack non-iterable type: ") + kind_name(item.kind));
      }
      if (item.array->size() != loopvar.a.size()) {
        fail(std::string("Too ") + (loopvar.a.size() > item.array->size() ? "few" : "many") +
             " items to unpack");
      }
    }
    if (filter) {
      Env* test_scope = new_env(scope);
      bind(item, test_scope);
      if (!eval(*filter, test_scope).truthy()) continue;
    }
    items.push_back(item);
  }
  bool no_iteration = true;
  const double length = static_cast<double>(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    step();
    const double index = static_cast<double>(i);
    Object loop;
    loop.entries = {{"index", Value::of_int(index + 1)},
                    {"index0", Value::of_int(index)},
                    {"revindex", Value::of_int(length - index)},
                    {"revindex0", Value::of_int(length - index - 1)},
                    {"first", Value::of_bool(i == 0)},
                    {"last", Value::of_bool(i + 1 == items.size())},
                    {"length", Value::of_int(length)},
                    {"previtem", i > 0 ? items[i - 1] : Value{}},
                    {"nextitem", i + 1 < items.size() ? items[i + 1] : Value{}}};
    scope->set("loop", Value::of_object(std::move(loop)));
    bind(items[i], scope);
    std::string iteration;  // an iteration cut short by break/continue prints nothing
    int depth = depth_;
    try {
      render_block(node.a, scope, iteration);
    } catch (const ContinueSignal&) {
      depth_ = depth;
      continue;
    } catch (const BreakSignal&) {
      depth_ = depth;
      break;
    }
    append(out, iteration);
    no_iteration = false;
  }
  if (no_iteration) render_block(node.b, scope, out);
}

void Interpreter::execute_set(const Node& node, Env* env) {
  Value rhs;
  if (node.y) {
    rhs = eval(*node.y, env);
  } else {
    std::string body;
    render_block(node.a, env, body);
    rhs = Value::of_string(std::move(body));
  }
  line_ = node.line;
  const Node& target = *node.x;
  if (target.kind == NodeKind::kIdentifier) {
    env->set(target.str, std::move(rhs));
  } else if (target.kind == NodeKind::kTuple) {
    if (!rhs.is_array())
      fail(std::string("Cannot unpack non-iterable type in set: ") + kind_name(rhs.kind));
    if (rhs.array->size() != target.a.size()) {
      fail(std::string("Too ") + (target.a.size() > rhs.array->size() ? "few" : "many") +
           " items to unpack in set");
    }
    for (size_t i = 0; i < target.a.size(); ++i) {
      if (target.a[i]->kind != NodeKind::kIdentifier) fail("cannot unpack to a non-identifier");
      env->set(target.a[i]->str, (*rhs.array)[i]);
    }
  } else if (target.kind == NodeKind::kMember) {
    Value object = eval(*target.x, env);
    if (object.kind != Kind::kNamespace) fail("cannot assign attribute on non-namespace object");
    if (target.flag || target.y->kind != NodeKind::kIdentifier) {
      fail("Cannot assign to member with non-identifier property");
    }
    object.object->set(target.y->str, std::move(rhs));
  } else {
    fail("invalid left-hand side in {% set %}");
  }
}

void Interpreter::bind_arguments(const std::string& macro,
                                 const std::vector<std::unique_ptr<Node>>& params, int special,
                                 Values args, Env* scope) {
  Args a = split_args(args);
  std::vector<const Node*> pending_defaults;
  for (size_t i = 0; i < params.size(); ++i) {
    const Node& param = *params[i];
    const std::string& name = param.str;
    Value value;
    bool given = i < a.positional.size();
    if (given) {
      value = a.positional[i];
    } else if (const Value* kw = a.keyword(name)) {
      value = *kw;
      given = true;
      std::erase_if(a.keywords.entries, [&](const auto& e) { return e.first == name; });
    }
    if (!given && param.kind == NodeKind::kKeywordArg) pending_defaults.push_back(&param);
    scope->set(name, value);
  }
  if (special & kKwargs) {
    scope->set("kwargs", Value::of_object(a.keywords));
  } else if (!a.keywords.entries.empty()) {
    fail("macro " + macro + " takes no keyword argument '" + a.keywords.entries[0].first + "'");
  }
  if (special & kVarargs) {
    Values rest;
    for (size_t i = params.size(); i < a.positional.size(); ++i) rest.push_back(a.positional[i]);
    scope->set("varargs", Value::of_array(std::move(rest)));
  } else if (a.positional.size() > params.size()) {
    fail("macro " + macro + " takes not more than " + std::to_string(params.size()) +
         " argument(s)");
  }
  for (const Node* param : pending_defaults) scope->set(param->str, eval(*param->x, scope));
}

void Interpreter::define_macro(const Node& node, Env* env) {
  int special = macro_special_arguments(node.a, node.b);
  env->set(node.str, Value::of_function([this, &node, env, special](Values& args, Env* call_site) {
             Env* parent = env;
             if (special & kCaller) {
               parent = new_env(env);
               const Value* caller =
                   call_site && call_site->is_call_block ? call_site->local("caller") : nullptr;
               parent->set("caller", caller ? *caller : Value{});
             }
             Env* scope = new_env(parent);
             bind_arguments("'" + node.str + "'", node.a, special, args, scope);
             std::string out;
             render_block(node.b, scope, out);
             return Value::of_string(std::move(out));
           }));
}

Value Interpreter::call_block(const Node& node, Env* env) {
  int special = macro_special_arguments(node.a, node.b);
  Value caller = Value::of_function([this, &node, env, special](Values& args, Env*) {
    Env* scope = new_env(env);
    bind_arguments("None", node.a, special, args, scope);
    std::string out;
    render_block(node.b, scope, out);
    return Value::of_string(std::move(out));
  });
  const Node& call = *node.x;
  Args a = evaluate_args(call.a, env);
  Values args = std::move(a.positional);
  args.push_back(Value::of_object(std::move(a.keywords), Kind::kKwargs));
  Value fn = eval(*call.x, env);
  line_ = node.line;
  if (fn.kind != Kind::kFunction) {
    fail(std::string("Cannot call something that is not a function: got ") + kind_name(fn.kind));
  }
  Env* site = new_env(env);
  site->is_call_block = true;
  site->set("caller", caller);
  return (*fn.function)(args, site);
}

}  // namespace weft::serve::jinja
