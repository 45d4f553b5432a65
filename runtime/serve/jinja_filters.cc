// The filters of @huggingface/jinja (and the few of Python's jinja2 that chat templates use), as
// it defines them; the tests and the methods of strings and dicts are in jinja_builtins.cc.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "runtime/serve/jinja_interpreter.h"

namespace weft::serve::jinja {
namespace {

// parseInt(s, 10) and parseFloat(s); nullopt for NaN.
std::optional<double> parse_number(const std::string& s, bool integer) {
  std::string t = js_trim(s, true, false);
  size_t i = 0;
  std::string lit;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) lit += t[i++];
  if (!integer && t.compare(i, 8, "Infinity") == 0) return lit == "-" ? -INFINITY : INFINITY;
  size_t digits = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) lit += t[i++], ++digits;
  if (!integer) {
    if (i < t.size() && t[i] == '.') {
      lit += t[i++];
      while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i])))
        lit += t[i++], ++digits;
    }
    if (digits && i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
      size_t j = i + 1;
      std::string exp = "e";
      if (j < t.size() && (t[j] == '+' || t[j] == '-')) exp += t[j++];
      if (j < t.size() && std::isdigit(static_cast<unsigned char>(t[j]))) {
        while (j < t.size() && std::isdigit(static_cast<unsigned char>(t[j]))) exp += t[j++];
        lit += exp;
      }
    }
  }
  if (!digits) return std::nullopt;
  double v = std::strtod(lit.c_str(), nullptr);
  return integer ? std::trunc(v) : v;
}

// getAttributeValue: "a.b.0" through dicts, namespaces and lists.
Value attribute_path(const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (v.is_object() || v.kind == Kind::kNamespace) {
      const Value* next = v.object->find(part);
      v = next ? *next : Value{};
    } else if (v.is_array()) {
      char* end = nullptr;
      long index = std::strtol(part.c_str(), &end, 10);
      if (end == part.c_str() || index < 0 || static_cast<size_t>(index) >= v.array->size())
        return Value{};
      v = (*v.array)[index];
    } else {
      return Value{};
    }
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

}  // namespace

// Jinja2 filters that @huggingface/jinja lacks (it fails on them), with Python's semantics.
Value Interpreter::jinja2_filter(const Value& operand, const Node& filter, Env* env) {
  const std::string& name = filter.kind == NodeKind::kCall ? filter.x->str : filter.str;
  Args a = filter.kind == NodeKind::kCall ? evaluate_args(filter.a, env) : Args{};
  line_ = filter.line;
  if (name == "count") {
    if (operand.is_array()) return Value::of_int(static_cast<double>(operand.array->size()));
    if (operand.is_object())
      return Value::of_int(static_cast<double>(operand.object->entries.size()));
    if (operand.kind == Kind::kString)
      return Value::of_int(static_cast<double>(utf16_length(operand.str)));
  } else if (name == "round") {
    const Value* precision = a.get(0, "precision");
    const Value* method = a.get(1, "method");
    if (precision && precision->kind != Kind::kInt) fail("round precision must be an integer");
    if (method && method->kind != Kind::kString) fail("round method must be a string");
    double scale = std::pow(10.0, precision ? precision->number : 0);
    std::string how = method ? method->str : "common";
    double x = operand.kind == Kind::kBool ? operand.boolean : operand.number;
    if (operand.is_number() || operand.kind == Kind::kBool) {
      if (how == "common") return Value::of_float(std::nearbyint(x * scale) / scale);
      if (how == "floor") return Value::of_float(std::floor(x * scale) / scale);
      if (how == "ceil") return Value::of_float(std::ceil(x * scale) / scale);
      fail("round method must be 'common', 'floor' or 'ceil'");
    }
  } else if (!operand.is_nullish()) {  // e, escape
    std::string out;
    for (char c : operand.kind == Kind::kString ? operand.str : to_display(operand)) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&#34;";
          break;
        case '\'':
          out += "&#39;";
          break;
        default:
          out += c;
      }
    }
    return checked_string(std::move(out));
  }
  fail("Cannot apply filter \"" + name + "\" to type: " + kind_name(operand.kind));
}

Value Interpreter::apply_filter(const Value& operand, const Node& filter, Env* env) {
  const std::string& name = filter.kind == NodeKind::kCall ? filter.x->str : filter.str;
  if (filter.kind == NodeKind::kCall && filter.x->kind != NodeKind::kIdentifier)
    fail("Unknown filter");
  auto cannot = [&]() {
    return "Cannot apply filter \"" + name + "\" to type: " + kind_name(operand.kind);
  };
  if (name == "count" || name == "round" || name == "e" || name == "escape") {
    return jinja2_filter(operand, filter, env);
  }
  if (filter.kind == NodeKind::kIdentifier) {
    if (name == "safe") return operand;
    if (name == "tojson") return Value::of_string(to_json(operand, JsonOptions{}, line_));
    if (operand.is_array()) {
      const Values& items = *operand.array;
      if (name == "list") return operand;
      // HF returns a JavaScript undefined here that fails wherever it is used next.
      if ((name == "first" || name == "last") && items.empty()) fail(name + " of an empty list");
      if (name == "first") return items.front();
      if (name == "last") return items.back();
      if (name == "length") return Value::of_int(static_cast<double>(items.size()));
      if (name == "reverse") return Value::of_array(Values(items.rbegin(), items.rend()));
      if (name == "sort") {
        Values sorted = items;
        std::stable_sort(sorted.begin(), sorted.end(),
                         [&](const Value& x, const Value& y) { return compare(x, y, false) < 0; });
        return Value::of_array(std::move(sorted));
      }
      if (name == "join") {
        std::string out;
        for (const Value& x : items) out += x.is_nullish() ? "" : to_raw_string(x);
        return checked_string(std::move(out));
      }
      if (name == "string")
        return Value::of_string(to_json(operand, JsonOptions{}, line_, "undefined"));
      if (name == "unique") {
        Values out;
        for (const Value& x : items) {
          bool seen = std::any_of(out.begin(), out.end(),
                                  [&](const Value& y) { return strict_equal(x, y); });
          if (!seen) out.push_back(x);
        }
        return Value::of_array(std::move(out));
      }
      fail("Unknown ArrayValue filter: " + name);
    }
    if (operand.kind == Kind::kString) {
      const std::string& s = operand.str;
      if (name == "length") return Value::of_int(static_cast<double>(utf16_length(s)));
      if (name == "upper") return Value::of_string(js_upper(s));
      if (name == "lower") return Value::of_string(js_lower(s));
      if (name == "title") return Value::of_string(title_case(s));
      if (name == "capitalize") return Value::of_string(capitalize(s));
      if (name == "trim") return Value::of_string(js_trim(s, true, true));
      if (name == "join" || name == "string") return operand;
      if (name == "int") return Value::of_int(parse_number(s, true).value_or(0));
      if (name == "float") return Value::of_float(parse_number(s, false).value_or(0));
      if (name != "indent") fail("Unknown StringValue filter: " + name);
    }
    if (operand.is_number()) {
      if (name == "abs")
        return operand.kind == Kind::kInt ? Value::of_int(std::fabs(operand.number))
                                          : Value::of_float(std::fabs(operand.number));
      if (name == "int") return Value::of_int(std::trunc(operand.number) + 0.0);
      if (name == "float") return Value::of_float(operand.number);
      if (name == "string") return Value::of_string(to_display(operand));
      fail("Unknown NumericValue filter: " + name);
    }
    if (operand.is_object()) {
      Values no_args;
      if (name == "items") return (*builtin_member(operand, "items").function)(no_args, env);
      if (name == "length")
        return Value::of_int(static_cast<double>(operand.object->entries.size()));
      Value builtin = builtin_member(operand, name);
      if (builtin.kind == Kind::kFunction) return (*builtin.function)(no_args, env);
      fail("Unknown ObjectValue filter: " + name);
    }
    if (operand.kind == Kind::kBool) {
      if (name == "bool") return operand;
      if (name == "int") return Value::of_int(operand.boolean ? 1 : 0);
      if (name == "float") return Value::of_float(operand.boolean ? 1 : 0);
      if (name == "string") return Value::of_string(operand.boolean ? "true" : "false");
      fail("Unknown BooleanValue filter: " + name);
    }
    if (name != "indent") fail(cannot());
  }
  // Filters with arguments (and `indent`, which HF handles both ways with the same defaults).
  Args a = filter.kind == NodeKind::kCall ? evaluate_args(filter.a, env) : Args{};
  line_ = filter.line;
  if (name == "tojson") {
    JsonOptions options;
    const Value* indent = a.keyword("indent");
    if (indent && indent->kind != Kind::kInt && indent->kind != Kind::kNull)
      fail("If set, indent must be a number");
    if (indent && indent->kind == Kind::kInt) options.indent = static_cast<int>(indent->number);
    if (options.indent < 0) fail("tojson indent must not be negative");
    const Value* ascii = a.keyword("ensure_ascii");
    if (ascii && ascii->kind != Kind::kBool) fail("If set, ensure_ascii must be a boolean");
    options.ensure_ascii = is_bool(ascii);
    const Value* sort_keys = a.keyword("sort_keys");
    if (sort_keys && sort_keys->kind != Kind::kBool) fail("If set, sort_keys must be a boolean");
    options.sort_keys = is_bool(sort_keys);
    if (const Value* sep = a.keyword("separators"); sep && sep->kind != Kind::kNull) {
      if (!sep->is_array() || sep->array->size() != 2 || (*sep->array)[0].kind != Kind::kString ||
          (*sep->array)[1].kind != Kind::kString) {
        fail("separators must be a tuple of two strings");
      }
      options.has_separators = true;
      options.item_separator = (*sep->array)[0].str;
      options.key_separator = (*sep->array)[1].str;
    }
    return Value::of_string(to_json(operand, options, line_));
  }
  if (name == "join") {
    if (!operand.is_array() && operand.kind != Kind::kString) fail(cannot());
    const Value* sep = a.get(0, "separator");
    if (sep && sep->kind != Kind::kString) fail("separator must be a string");
    std::string separator = sep ? sep->str : "";
    std::string out;
    if (operand.kind == Kind::kString) {
      std::vector<char32_t> cps = decode_utf8(operand.str);
      for (size_t i = 0; i < cps.size(); ++i) out += (i ? separator : "") + encode_utf8({cps[i]});
    } else {
      for (size_t i = 0; i < operand.array->size(); ++i) {
        const Value& x = (*operand.array)[i];
        out += (i ? separator : "") + (x.is_nullish() ? "" : to_raw_string(x));
      }
    }
    return checked_string(std::move(out));
  }
  if (name == "int" || name == "float") {
    bool integer = name == "int";
    const Value* fallback = a.get(0, "default");
    Value dflt = fallback ? *fallback : integer ? Value::of_int(0) : Value::of_float(0);
    auto make = [&](double v) { return integer ? Value::of_int(v) : Value::of_float(v); };
    if (operand.kind == Kind::kString) {
      std::optional<double> v = parse_number(operand.str, integer);
      return v ? make(*v) : dflt;
    }
    if (operand.is_number())
      return integer ? Value::of_int(std::trunc(operand.number) + 0.0)
                     : Value::of_float(operand.number);
    if (operand.kind == Kind::kBool) return make(operand.boolean ? 1 : 0);
    fail(cannot());
  }
  if (name == "default") {
    Value dflt = a.positional.empty() ? Value::of_string("") : a.positional[0];
    const Value* boolean = a.get(1, "boolean");
    if (boolean && boolean->kind != Kind::kBool) fail("`default` filter flag must be a boolean");
    if (operand.kind == Kind::kUndefined || (is_bool(boolean) && !operand.truthy())) return dflt;
    return operand;
  }
  if (operand.is_array()) {
    const Values& items = *operand.array;
    if (name == "sort") {
      const Value* reverse = a.get(0, "reverse");
      const Value* case_sensitive = a.get(1, "case_sensitive");
      const Value* attribute = a.get(2, "attribute");
      if (reverse && reverse->kind != Kind::kBool) fail("reverse must be a boolean");
      if (case_sensitive && case_sensitive->kind != Kind::kBool)
        fail("case_sensitive must be a boolean");
      auto key = [&](const Value& item) {
        if (!attribute || attribute->kind == Kind::kNull) return item;
        if (attribute->kind == Kind::kInt)
          return attribute_path(item, js_number(attribute->number));
        if (attribute->kind == Kind::kString) return attribute_path(item, attribute->str);
        fail("attribute must be a string, integer, or null");
      };
      Values sorted = items;
      std::stable_sort(sorted.begin(), sorted.end(), [&](const Value& x, const Value& y) {
        int c = compare(key(x), key(y), is_bool(case_sensitive));
        return is_bool(reverse) ? c > 0 : c < 0;
      });
      return Value::of_array(std::move(sorted));
    }
    if (name == "selectattr" || name == "rejectattr") {
      bool select = name == "selectattr";
      for (const Value& item : items) {
        if (!item.is_object() && item.kind != Kind::kNamespace) {
          fail("`" + name + "` can only be applied to array of objects");
        }
      }
      for (const auto& arg : filter.a) {
        if (arg->kind != NodeKind::kString) fail("arguments of `" + name + "` must be strings");
      }
      if (a.positional.empty()) fail("`" + name + "` needs an attribute name");
      const std::string& attr = a.positional[0].str;
      std::string test = a.positional.size() > 1 ? a.positional[1].str : "";
      if (!test.empty() && !is_test(test)) fail("Unknown test: " + test);
      const Value* test_arg = a.positional.size() > 2 ? &a.positional[2] : nullptr;
      Values out;
      for (const Value& item : items) {
        const Value* v = item.object->find(attr);
        bool result = v && (test.empty() ? v->truthy() : apply_test(test, *v, test_arg));
        if (result == select) out.push_back(item);
      }
      return Value::of_array(std::move(out));
    }
    if (name == "map") {
      const Value* attribute = a.keyword("attribute");
      if (!attribute)
        fail("`map` expressions without `attribute` set are not currently supported.");
      if (attribute->kind != Kind::kString) fail("attribute must be a string");
      const Value* dflt = a.keyword("default");
      Values out;
      for (const Value& item : items) {
        if (!item.is_object() && item.kind != Kind::kNamespace)
          fail("items in map must be an object");
        Value v = attribute_path(item, attribute->str);
        out.push_back(v.kind == Kind::kUndefined && dflt ? *dflt : v);
      }
      return Value::of_array(std::move(out));
    }
    fail("Unknown ArrayValue filter: " + name);
  }
  if (operand.kind == Kind::kString) {
    if (name == "indent") {
      const Value* width = a.get(0, "width");
      if (width && width->kind != Kind::kInt && width->kind != Kind::kString) {
        fail("width must be an integer or a string");
      }
      const Value* first = a.get(1, "first");
      const Value* blank = a.get(2, "blank");
      std::string pad = !width ? "    "
                        : width->kind == Kind::kString
                            ? width->str
                            : std::string(static_cast<size_t>(std::max(0.0, width->number)), ' ');
      std::string out;
      size_t start = 0, index = 0;
      while (true) {
        size_t nl = operand.str.find('\n', start);
        std::string line =
            operand.str.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        bool skip = (!(first && first->truthy()) && index == 0) ||
                    (!(blank && blank->truthy()) && line.empty());
        out += (index ? "\n" : "") + (skip ? "" : pad) + line;
        if (nl == std::string::npos) break;
        start = nl + 1;
        ++index;
      }
      return checked_string(std::move(out));
    }
    if (name == "replace") {
      Value method = builtin_member(operand, "replace");
      Values args = a.positional;
      args.push_back(Value::of_object(a.keywords, Kind::kKwargs));
      return (*method.function)(args, env);
    }
    fail("Unknown StringValue filter: " + name);
  }
  if (operand.is_object()) {
    Value builtin = builtin_member(operand, name);
    if (builtin.kind == Kind::kFunction) {
      Values args = a.positional;
      if (!a.keywords.entries.empty()) args.push_back(Value::of_object(a.keywords, Kind::kKwargs));
      return (*builtin.function)(args, env);
    }
    fail("Unknown ObjectValue filter: " + name);
  }
  fail(cannot());
}

}  // namespace weft::serve::jinja
