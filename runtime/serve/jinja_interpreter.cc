#include "runtime/serve/jinja_interpreter.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <optional>

namespace weft::serve::jinja {
namespace {

constexpr int64_t kMaxSteps = 2'000'000;  // real chat templates take thousands
constexpr int kMaxDepth = 400;            // nested macro calls and blocks
constexpr double kMaxRange = 1'000'000;
constexpr size_t kMaxArrayLength = 1'000'000;

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
  if (++depth_ > kMaxDepth) fail("template nesting too deep (recursive macro?)");
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

Args Interpreter::evaluate_args(const std::vector<std::unique_ptr<Node>>& nodes, Env* env) {
  Args out;
  for (const auto& n : nodes) {
    if (n->kind == NodeKind::kSpread) {
      Value v = eval(*n->x, env);
      if (!v.is_array()) fail(std::string("Cannot unpack non-iterable type: ") + kind_name(v.kind));
      for (const Value& item : *v.array) out.positional.push_back(item);
    } else if (n->kind != NodeKind::kKeywordArg && n->kind != NodeKind::kKeywordSpread) {
      out.positional.push_back(eval(*n, env));
    }
  }
  auto add = [&](const std::string& key, Value value) {
    if (out.keywords.find(key)) fail("Got multiple values for keyword argument '" + key + "'");
    out.keywords.entries.emplace_back(key, std::move(value));
  };
  for (const auto& n : nodes) {
    if (n->kind == NodeKind::kKeywordArg) {
      add(n->str, eval(*n->x, env));
    } else if (n->kind == NodeKind::kKeywordSpread) {
      Value v = eval(*n->x, env);
      if (!v.is_object()) fail("Argument after ** must be a mapping");
      for (const auto& [k, value] : v.object->entries) add(k, value);
    }
  }
  return out;
}

Values Interpreter::call_arguments(const std::vector<std::unique_ptr<Node>>& nodes, Env* env) {
  Args a = evaluate_args(nodes, env);
  Values out = std::move(a.positional);
  if (!a.keywords.entries.empty()) {
    out.push_back(Value::of_object(std::move(a.keywords), Kind::kKwargs));
  }
  return out;
}

Value Interpreter::eval(const Node& node, Env* env) {
  line_ = node.line;
  step();
  switch (node.kind) {
    case NodeKind::kIdentifier:
      return env->lookup(node.str);
    case NodeKind::kInteger:
      return Value::of_int(node.num);
    case NodeKind::kFloat:
      return Value::of_float(node.num);
    case NodeKind::kString:
    case NodeKind::kText:
      return Value::of_string(node.str);
    case NodeKind::kArray:
    case NodeKind::kTuple: {
      Values items;
      for (const auto& n : node.a) items.push_back(eval(*n, env));
      return Value::of_array(std::move(items),
                             node.kind == NodeKind::kTuple ? Kind::kTuple : Kind::kArray);
    }
    case NodeKind::kDict: {
      Object object;
      for (size_t i = 0; i < node.a.size(); ++i) {
        Value key = eval(*node.a[i], env);
        if (key.kind != Kind::kString) {
          fail(std::string("Object keys must be strings: got ") + kind_name(key.kind));
        }
        object.set(key.str, eval(*node.b[i], env));
      }
      return Value::of_object(std::move(object));
    }
    case NodeKind::kMember:
      return member(node, env);
    case NodeKind::kCall: {
      Values args = call_arguments(node.a, env);
      Value fn = eval(*node.x, env);
      line_ = node.line;
      if (fn.kind != Kind::kFunction) {
        fail(std::string("Cannot call something that is not a function: got ") +
             kind_name(fn.kind));
      }
      if (++depth_ > kMaxDepth) fail("template nesting too deep (recursive macro?)");
      Value result = (*fn.function)(args, env);
      --depth_;
      return result;
    }
    case NodeKind::kBinary:
      return binary(node, env);
    case NodeKind::kUnary:
      return unary(node, env);
    case NodeKind::kFilter: {
      Value operand = eval(*node.x, env);
      line_ = node.line;
      return apply_filter(operand, *node.y, env);
    }
    case NodeKind::kTest: {
      Value operand = eval(*node.x, env);
      line_ = node.line;
      return Value::of_bool(apply_test(node.str, operand) != node.flag);
    }
    case NodeKind::kSelect:
      return eval(*node.y, env).truthy() ? eval(*node.x, env) : Value{};
    case NodeKind::kTernary:
      return eval(*node.x, env).truthy() ? eval(*node.y, env) : eval(*node.z, env);
    case NodeKind::kIf:
    case NodeKind::kFor:
    case NodeKind::kSet:
    case NodeKind::kMacro:
    case NodeKind::kCallBlock:
      fail("statement used as an expression");
    case NodeKind::kFilterBlock: {
      std::string body;
      render_block(node.a, env, body);
      line_ = node.line;
      return apply_filter(Value::of_string(std::move(body)), *node.x, env);
    }
    default:
      fail("unexpected syntax in an expression");
  }
}

Value Interpreter::member(const Node& node, Env* env) {
  Value object = eval(*node.x, env);
  Value property;
  if (node.flag) {
    if (node.y->kind == NodeKind::kSlice) return slice(object, *node.y, env);
    property = eval(*node.y, env);
  } else if (node.y->kind == NodeKind::kInteger) {
    property = Value::of_int(node.y->num);
  } else {
    property = Value::of_string(node.y->str);
  }
  line_ = node.line;
  if (object.is_object() || object.kind == Kind::kNamespace) {
    if (property.kind != Kind::kString) {
      fail(std::string("Cannot access property with non-string: got ") + kind_name(property.kind));
    }
    if (const Value* v = object.object->find(property.str)) return *v;
    return object.kind == Kind::kNamespace ? Value{} : builtin_member(object, property.str);
  }
  if (object.is_array() || object.kind == Kind::kString) {
    if (property.kind == Kind::kInt) {
      if (object.is_array()) {
        double size = static_cast<double>(object.array->size());
        double i = property.number < 0 ? size + property.number : property.number;
        return i >= 0 && i < size ? (*object.array)[static_cast<size_t>(i)] : Value{};
      }
      // String.prototype.at counts UTF-16 code units; a lone surrogate half becomes U+FFFD.
      std::vector<char32_t> cps = decode_utf8(object.str);
      double size = static_cast<double>(utf16_length(object.str));
      double i = property.number < 0 ? size + property.number : property.number;
      if (i < 0 || i >= size) return Value{};
      double unit = 0;
      for (char32_t c : cps) {
        double width = c >= 0x10000 ? 2 : 1;
        if (i < unit + width) return Value::of_string(encode_utf8({i == unit ? c : 0xfffd}));
        unit += width;
      }
      return Value{};
    }
    if (property.kind == Kind::kString) return builtin_member(object, property.str);
    fail(std::string("Cannot access property with non-string/non-number: got ") +
         kind_name(property.kind));
  }
  if (property.kind != Kind::kString) {
    fail(std::string("Cannot access property with non-string: got ") + kind_name(property.kind));
  }
  return Value{};
}

Value Interpreter::slice(const Value& object, const Node& node, Env* env) {
  if (!object.is_array() && object.kind != Kind::kString)
    fail("Slice object must be an array or string");
  auto part = [&](const Node* n, const char* what) -> std::optional<double> {
    if (!n) return std::nullopt;
    Value v = eval(*n, env);
    if (v.kind == Kind::kUndefined) return std::nullopt;
    if (v.kind != Kind::kInt) fail(std::string("Slice ") + what + " must be numeric or undefined");
    return v.number;
  };
  std::optional<double> start = part(node.x.get(), "start"), stop = part(node.y.get(), "stop"),
                        step_opt = part(node.z.get(), "step");
  line_ = node.line;
  std::vector<char32_t> cps;
  double length;
  if (object.is_array()) {
    length = static_cast<double>(object.array->size());
  } else {
    cps = decode_utf8(object.str);
    length = static_cast<double>(cps.size());
  }
  double step = step_opt.value_or(1);
  double b, e;
  if (step >= 0) {
    b = start.value_or(0);
    b = b < 0 ? std::max(length + b, 0.0) : std::min(b, length);
    e = stop.value_or(length);
    e = e < 0 ? std::max(length + e, 0.0) : std::min(e, length);
  } else {
    b = start.value_or(length - 1);
    b = b < 0 ? std::max(length + b, -1.0) : std::min(b, length - 1);
    e = stop.value_or(-1);
    e = e < -1 ? std::max(length + e, -1.0) : std::min(e, length - 1);
  }
  double direction = step > 0 ? 1 : step < 0 ? -1 : 0;
  Values items;
  std::vector<char32_t> chars;
  for (double i = b; direction * i < direction * e; i += step) {
    size_t k = static_cast<size_t>(i);
    if (object.is_array()) {
      items.push_back((*object.array)[k]);
    } else {
      chars.push_back(cps[k]);
    }
  }
  return object.is_array() ? Value::of_array(std::move(items))
                           : Value::of_string(encode_utf8(chars));
}

Value Interpreter::unary(const Node& node, Env* env) {
  Value v = eval(*node.x, env);
  line_ = node.line;
  if (node.str == "not") return Value::of_bool(!v.truthy());
  double sign = node.str == "-" ? -1 : 1;
  if (v.is_number()) {
    return v.kind == Kind::kFloat ? Value::of_float(sign * v.number)
                                  : Value::of_int(sign * v.number);
  }
  if (v.kind == Kind::kBool) return Value::of_int(sign * (v.boolean ? 1 : 0));
  fail("Unknown operator \"" + node.str + "\" for " + kind_name(v.kind));
}

Value Interpreter::binary(const Node& node, Env* env) {
  const std::string& op = node.str;
  Value left = eval(*node.x, env);
  if (op == "and") return left.truthy() ? eval(*node.y, env) : left;
  if (op == "or") return left.truthy() ? left : eval(*node.y, env);
  Value right = eval(*node.y, env);
  line_ = node.line;
  if (op == "==") return Value::of_bool(loose_equal(left, right));
  if (op == "!=") return Value::of_bool(!loose_equal(left, right));
  auto unknown = [&]() {
    return "Unknown operator \"" + op + "\" between " + kind_name(left.kind) + " and " +
           kind_name(right.kind);
  };
  if (left.is_number() && right.is_number() && op != "~" && op != "**") {
    double a = left.number, b = right.number;
    bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat;
    auto num = [&](double r) { return is_float ? Value::of_float(r) : Value::of_int(r); };
    if (op == "+") return num(a + b);
    if (op == "-") return num(a - b);
    if (op == "*") return num(a * b);
    if (op == "/") return Value::of_float(a / b);
    if (op == "//") return num(std::floor(a / b));
    if (op == "%") return num(std::fmod(a, b));
    if (op == "<") return Value::of_bool(a < b);
    if (op == ">") return Value::of_bool(a > b);
    if (op == ">=") return Value::of_bool(a >= b);
    if (op == "<=") return Value::of_bool(a <= b);
    fail(unknown());
  }
  if (left.kind == Kind::kUndefined || right.kind == Kind::kUndefined) {
    if (right.kind == Kind::kUndefined && (op == "in" || op == "not in")) {
      return Value::of_bool(op == "not in");
    }
    if (op == "~" && left.kind != Kind::kNull && right.kind != Kind::kNull) {
      std::string l = left.kind == Kind::kUndefined ? "" : to_raw_string(left);
      std::string r = right.kind == Kind::kUndefined ? "" : to_raw_string(right);
      return checked_string(l + r);
    }
    fail("Cannot perform operation " + op + " on undefined values");
  }
  if (left.kind == Kind::kNull || right.kind == Kind::kNull) {
    fail("Cannot perform operation on null values");
  }
  if (op == "~") return checked_string(to_raw_string(left) + to_raw_string(right));
  auto numeric = [](const Value& v) { return v.is_number() || v.kind == Kind::kBool; };
  auto as_number = [](const Value& v) {
    return v.kind == Kind::kBool ? (v.boolean ? 1.0 : 0.0) : v.number;
  };
  if (op == "**" && numeric(left) && numeric(right)) {
    double a = as_number(left), b = as_number(right);
    if (a == 0 && b < 0) fail("0.0 cannot be raised to a negative power");
    double r = std::pow(a, b);
    if (!std::isfinite(r)) fail("Exponentiation result is not a finite real number");
    bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat || b < 0;
    return is_float ? Value::of_float(r) : Value::of_int(r);
  }
  if (left.is_array() && right.is_array()) {
    if (op == "+") {
      Values joined = *left.array;
      joined.insert(joined.end(), right.array->begin(), right.array->end());
      if (joined.size() > kMaxArrayLength) fail("list longer than 1000000 items");
      return Value::of_array(std::move(joined));
    }
  } else if (right.is_array()) {
    if (op == "in" || op == "not in") {
      bool member = false;
      for (const Value& item : *right.array) member = member || strict_equal(item, left);
      return Value::of_bool(member == (op == "in"));
    }
  }
  if ((left.kind == Kind::kString || right.kind == Kind::kString) && op == "+") {
    return checked_string(to_raw_string(left) + to_raw_string(right));
  }
  if (left.kind == Kind::kString && right.kind == Kind::kString && (op == "in" || op == "not in")) {
    return Value::of_bool((right.str.find(left.str) != std::string::npos) == (op == "in"));
  }
  if (left.kind == Kind::kString && right.is_object() && (op == "in" || op == "not in")) {
    return Value::of_bool((right.object->find(left.str) != nullptr) == (op == "in"));
  }
  fail(unknown());
}

}  // namespace weft::serve::jinja
