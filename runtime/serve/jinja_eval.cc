// Expressions: values, member access and slicing, calls and operators, with
// @huggingface/jinja's semantics (JavaScript numbers, loose ==, string + anything).
#include <algorithm>
#include <cmath>
#include <optional>

#include "runtime/serve/jinja_interpreter.h"

namespace weft::serve::jinja {

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
      enter();
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
      if (joined.size() > kMaxArrayLength) fail("list longer than 100000 items");
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
