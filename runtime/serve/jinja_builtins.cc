// Filters, tests, and the methods of strings and dicts, as @huggingface/jinja defines them
// (which is not always as Python does: `strip('\n')` strips all whitespace, `title` only
// uppercases, `==` is JavaScript's loose equality).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "runtime/serve/jinja_interpreter.h"

namespace weft::serve::jinja {
namespace {

bool is_word_char(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// JavaScript's value.replace(/\b\w/g, c => c.toUpperCase()).
std::string title_case(const std::string& s) {
  std::vector<char32_t> cps = decode_utf8(s);
  for (size_t i = 0; i < cps.size(); ++i) {
    if (is_word_char(cps[i]) && (i == 0 || !is_word_char(cps[i - 1])) && cps[i] >= 'a' &&
        cps[i] <= 'z') {
      cps[i] -= 32;
    }
  }
  return encode_utf8(cps);
}

std::string capitalize(const std::string& s) {
  std::vector<char32_t> cps = decode_utf8(s);
  if (cps.empty()) return s;
  std::string first = js_upper(encode_utf8({cps[0]}));
  return first + encode_utf8(std::vector<char32_t>(cps.begin() + 1, cps.end()));
}

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

// str.replace(old, new, count) through JavaScript's replaceAll with a /gu pattern: an empty
// `old` matches before every code point and at the end.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        double count) {
  if (count == 0) return s;
  double remaining = count < 0 ? INFINITY : count;
  std::string out;
  if (from.empty()) {
    std::vector<char32_t> cps = decode_utf8(s);
    for (char32_t c : cps) {
      if (remaining > 0) out += to, --remaining;
      out += encode_utf8({c});
    }
    if (remaining > 0) out += to;
    return out;
  }
  size_t pos = 0;
  while (true) {
    size_t hit = remaining > 0 ? s.find(from, pos) : std::string::npos;
    if (hit == std::string::npos) break;
    out += s.substr(pos, hit - pos) + to;
    pos = hit + from.size();
    --remaining;
  }
  return out + s.substr(pos);
}

Values split(Interpreter& in, const std::string& s, const Args& a) {
  const Value* sep = a.get(0, "sep");
  const Value* max_value = a.get(1, "maxsplit");
  if (sep && sep->kind != Kind::kString && sep->kind != Kind::kNull) {
    in.fail("sep argument must be a string or null");
  }
  if (max_value && max_value->kind != Kind::kInt) in.fail("maxsplit argument must be a number");
  double maxsplit = max_value ? max_value->number : -1;
  Values out;
  if (!sep || sep->kind == Kind::kNull) {
    std::vector<char32_t> cps = decode_utf8(js_trim(s, true, false));
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && js_whitespace(cps[i])) ++i;
      if (i >= cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !js_whitespace(cps[j])) ++j;
      if (maxsplit >= 0 && static_cast<double>(out.size()) >= maxsplit) {
        out.push_back(
            Value::of_string(encode_utf8(std::vector<char32_t>(cps.begin() + i, cps.end()))));
        break;
      }
      out.push_back(
          Value::of_string(encode_utf8(std::vector<char32_t>(cps.begin() + i, cps.begin() + j))));
      i = j;
    }
    return out;
  }
  if (sep->str.empty()) in.fail("empty separator");
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(sep->str, pos);
    if (hit == std::string::npos) break;
    parts.push_back(s.substr(pos, hit - pos));
    pos = hit + sep->str.size();
  }
  parts.push_back(s.substr(pos));
  if (maxsplit >= 0 && static_cast<double>(parts.size()) > maxsplit) {
    size_t keep = static_cast<size_t>(maxsplit);
    std::string rest;
    for (size_t i = keep; i < parts.size(); ++i) rest += (i > keep ? sep->str : "") + parts[i];
    parts.resize(keep);
    parts.push_back(rest);
  }
  for (auto& p : parts) out.push_back(Value::of_string(std::move(p)));
  return out;
}

bool affix_match(Interpreter& in, const std::string& s, const Values& args, bool prefix) {
  const char* name = prefix ? "startswith" : "endswith";
  if (args.empty()) in.fail(std::string(name) + "() requires at least one argument");
  auto match = [&](const std::string& p) {
    return p.size() <= s.size() && (prefix ? s.compare(0, p.size(), p) == 0
                                           : s.compare(s.size() - p.size(), p.size(), p) == 0);
  };
  if (args[0].kind == Kind::kString) return match(args[0].str);
  if (args[0].is_array()) {
    for (const Value& item : *args[0].array) {
      if (item.kind != Kind::kString)
        in.fail(std::string(name) + "() tuple elements must be strings");
      if (match(item.str)) return true;
    }
    return false;
  }
  in.fail(std::string(name) + "() argument must be a string or tuple of strings");
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

bool is_bool(const Value* v) { return v && v->kind == Kind::kBool && v->boolean; }

}  // namespace

int Interpreter::compare(const Value& a, const Value& b, bool case_sensitive) {
  if (a.kind == Kind::kNull && b.kind == Kind::kNull) return 0;
  if (a.kind == Kind::kUndefined && b.kind == Kind::kUndefined) return 0;
  if (a.is_nullish() || b.is_nullish()) {
    fail(std::string("Cannot compare ") + kind_name(a.kind) + " with " + kind_name(b.kind));
  }
  auto numeric = [](const Value& v) { return v.is_number() || v.kind == Kind::kBool; };
  if (numeric(a) && numeric(b)) {
    double x = a.kind == Kind::kBool ? a.boolean : a.number;
    double y = b.kind == Kind::kBool ? b.boolean : b.number;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.kind != b.kind) {
    fail(std::string("Cannot compare different types: ") + kind_name(a.kind) + " and " +
         kind_name(b.kind));
  }
  if (a.kind != Kind::kString) fail(std::string("Cannot compare type: ") + kind_name(a.kind));
  // JavaScript compares UTF-16 code units; for text without astral characters that is
  // code point order, which is UTF-8 byte order.
  std::string x = case_sensitive ? a.str : js_lower(a.str);
  std::string y = case_sensitive ? b.str : js_lower(b.str);
  return x < y ? -1 : x > y ? 1 : 0;
}

bool is_test(const std::string& name) {
  static const char* kTests[] = {"boolean",  "callable",  "odd",      "even",   "false",
                                 "true",     "none",      "string",   "number", "integer",
                                 "iterable", "mapping",   "sequence", "lower",  "upper",
                                 "defined",  "undefined", "equalto",  "eq"};
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

bool Interpreter::apply_test(const std::string& name, const Value& v, const Value* arg) {
  if (name == "equalto" || name == "eq") {
    if (!arg) fail("the '" + name + "' test needs a value to compare with");
    return strict_equal(v, *arg);
  }
  if (name == "boolean") return v.kind == Kind::kBool;
  if (name == "callable") return v.kind == Kind::kFunction;
  if (name == "odd" || name == "even") {
    if (v.kind != Kind::kInt) fail("cannot " + name + " on " + kind_name(v.kind));
    return (std::fmod(v.number, 2) != 0) == (name == "odd");
  }
  if (name == "false") return v.kind == Kind::kBool && !v.boolean;
  if (name == "true") return v.kind == Kind::kBool && v.boolean;
  if (name == "none") return v.kind == Kind::kNull;
  if (name == "string") return v.kind == Kind::kString;
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == Kind::kInt;
  if (name == "iterable") return v.kind == Kind::kArray || v.kind == Kind::kString;
  if (name == "mapping") return v.is_object();
  if (name == "sequence") return v.is_array() || v.is_object() || v.kind == Kind::kString;
  if (name == "lower") return v.kind == Kind::kString && v.str == js_lower(v.str);
  if (name == "upper") return v.kind == Kind::kString && v.str == js_upper(v.str);
  if (name == "defined") return v.kind != Kind::kUndefined;
  if (name == "undefined") return v.kind == Kind::kUndefined;
  fail("Unknown test: " + name);
}

Value Interpreter::builtin_member(const Value& object, const std::string& name) {
  if (object.is_array()) {
    return name == "length" ? Value::of_int(static_cast<double>(object.array->size())) : Value{};
  }
  if (object.kind == Kind::kString) {
    const std::string s = object.str;
    if (name == "length") return Value::of_int(static_cast<double>(utf16_length(s)));
    auto method = [](auto fn) { return Value::of_function(fn); };
    if (name == "upper")
      return method([s](Values&, Env*) { return Value::of_string(js_upper(s)); });
    if (name == "lower")
      return method([s](Values&, Env*) { return Value::of_string(js_lower(s)); });
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool start = name != "rstrip", end = name != "lstrip";
      return method(
          [s, start, end](Values&, Env*) { return Value::of_string(js_trim(s, start, end)); });
    }
    if (name == "title")
      return method([s](Values&, Env*) { return Value::of_string(title_case(s)); });
    if (name == "capitalize") {
      return method([s](Values&, Env*) { return Value::of_string(capitalize(s)); });
    }
    if (name == "startswith" || name == "endswith") {
      bool prefix = name == "startswith";
      return method([this, s, prefix](Values& args, Env*) {
        return Value::of_bool(affix_match(*this, s, args, prefix));
      });
    }
    if (name == "split") {
      return method([this, s](Values& args, Env*) {
        return Value::of_array(split(*this, s, split_args(args)));
      });
    }
    if (name == "replace") {
      return method([this, s](Values& args, Env*) {
        Args a = split_args(args);
        if (a.positional.size() < 2) fail("replace() requires at least two arguments");
        if (a.positional[0].kind != Kind::kString || a.positional[1].kind != Kind::kString) {
          fail("replace() arguments must be strings");
        }
        const Value* count = a.get(2, "count");
        if (count && count->kind != Kind::kInt && count->kind != Kind::kNull) {
          fail("replace() count argument must be a number or null");
        }
        double n = count && count->kind == Kind::kInt ? count->number : -1;
        return checked_string(replace_all(s, a.positional[0].str, a.positional[1].str, n));
      });
    }
    return Value{};
  }
  if (!object.is_object()) return Value{};
  std::shared_ptr<Object> obj = object.object;
  auto pairs = [obj]() {
    Values items;
    for (const auto& [k, v] : obj->entries)
      items.push_back(Value::of_array({Value::of_string(k), v}));
    return items;
  };
  if (name == "get") {
    return Value::of_function([this, obj](Values& args, Env*) {
      if (args.empty() || args[0].kind != Kind::kString) fail("Object key must be a string");
      if (const Value* v = obj->find(args[0].str)) return *v;
      return args.size() > 1 ? args[1] : Value::null();
    });
  }
  if (name == "items")
    return Value::of_function([pairs](Values&, Env*) { return Value::of_array(pairs()); });
  if (name == "keys" || name == "values") {
    bool keys = name == "keys";
    return Value::of_function([obj, keys](Values&, Env*) {
      Values out;
      for (const auto& [k, v] : obj->entries) out.push_back(keys ? Value::of_string(k) : v);
      return Value::of_array(std::move(out));
    });
  }
  if (name == "dictsort") {
    return Value::of_function([this, pairs](Values& args, Env*) {
      Args a = split_args(args);
      const Value* case_sensitive = a.get(0, "case_sensitive");
      const Value* by = a.get(1, "by");
      const Value* reverse = a.get(2, "reverse");
      if (case_sensitive && case_sensitive->kind != Kind::kBool)
        fail("case_sensitive must be a boolean");
      if (by && (by->kind != Kind::kString || (by->str != "key" && by->str != "value"))) {
        fail("by must be either 'key' or 'value'");
      }
      if (reverse && reverse->kind != Kind::kBool) fail("reverse must be a boolean");
      size_t index = by && by->str == "value" ? 1 : 0;
      Values items = pairs();
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        int c = compare((*x.array)[index], (*y.array)[index], is_bool(case_sensitive));
        return is_bool(reverse) ? c > 0 : c < 0;
      });
      return Value::of_array(std::move(items));
    });
  }
  return Value{};
}

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
