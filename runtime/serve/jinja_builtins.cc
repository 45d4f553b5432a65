// Tests, comparison, and the methods of strings and dicts, as @huggingface/jinja defines them
// (which is not always as Python does: `strip('\n')` strips all whitespace, `title` only
// uppercases, `==` is JavaScript's loose equality). The filters are in jinja_filters.cc.
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

}  // namespace

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

namespace {

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

}  // namespace

bool is_bool(const Value* v) { return v && v->kind == Kind::kBool && v->boolean; }

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

}  // namespace weft::serve::jinja
