#include "runtime/serve/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace weft::serve::jinja {

const Value* Object::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Object::set(const std::string& key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

Value Value::of_bool(bool b) {
  Value v{Kind::kBool};
  v.boolean = b;
  return v;
}

Value Value::of_int(double n) {
  Value v{Kind::kInt};
  v.number = n;
  return v;
}

Value Value::of_float(double n) {
  Value v{Kind::kFloat};
  v.number = n;
  return v;
}

Value Value::of_string(std::string s) {
  Value v{Kind::kString};
  v.str = std::move(s);
  return v;
}

Value Value::of_array(Values items, Kind kind) {
  Value v{kind};
  v.array = std::make_shared<Values>(std::move(items));
  return v;
}

Value Value::of_object(Object object, Kind kind) {
  Value v{kind};
  v.object = std::make_shared<Object>(std::move(object));
  return v;
}

Value Value::of_function(Function fn) {
  Value v{Kind::kFunction};
  v.function = std::make_shared<Function>(std::move(fn));
  return v;
}

namespace {

template <typename Json>
Value value_from_json(const Json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      return Value::null();
    case nlohmann::json::value_t::boolean:
      return Value::of_bool(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::of_int(static_cast<double>(j.template get<int64_t>()));
    case nlohmann::json::value_t::number_unsigned:
      return Value::of_int(static_cast<double>(j.template get<uint64_t>()));
    case nlohmann::json::value_t::number_float: {
      double d = j.template get<double>();
      return std::isfinite(d) && d == std::trunc(d) ? Value::of_int(d) : Value::of_float(d);
    }
    case nlohmann::json::value_t::string:
      return Value::of_string(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      Values items;
      for (const auto& item : j) items.push_back(value_from_json(item));
      return Value::of_array(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Object object;
      for (auto it = j.begin(); it != j.end(); ++it) {
        object.entries.emplace_back(it.key(), value_from_json(it.value()));
      }
      return Value::of_object(std::move(object));
    }
    case nlohmann::json::value_t::binary:
      break;
  }
  return Value::null();
}

}  // namespace

Value Value::from_json(const nlohmann::json& j) { return value_from_json(j); }
Value Value::from_json(const nlohmann::ordered_json& j) { return value_from_json(j); }

bool Value::truthy() const {
  switch (kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return false;
    case Kind::kBool:
      return boolean;
    case Kind::kInt:
    case Kind::kFloat:
      return number != 0 && !std::isnan(number);
    case Kind::kString:
      return !str.empty();
    case Kind::kArray:
    case Kind::kTuple:
      return !array->empty();
    case Kind::kObject:
    case Kind::kKwargs:
      return !object->entries.empty();
    case Kind::kNamespace:
    case Kind::kFunction:
      return true;
  }
  return false;
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kUndefined:
      return "UndefinedValue";
    case Kind::kNull:
      return "NullValue";
    case Kind::kBool:
      return "BooleanValue";
    case Kind::kInt:
      return "IntegerValue";
    case Kind::kFloat:
      return "FloatValue";
    case Kind::kString:
      return "StringValue";
    case Kind::kArray:
      return "ArrayValue";
    case Kind::kTuple:
      return "TupleValue";
    case Kind::kObject:
      return "ObjectValue";
    case Kind::kKwargs:
      return "KeywordArgumentsValue";
    case Kind::kNamespace:
      return "NamespaceValue";
    case Kind::kFunction:
      return "FunctionValue";
  }
  return "?";
}

// ECMAScript Number::toString: shortest round-trip digits, exponent form outside [1e-7, 1e21).
std::string js_number(double n) {
  if (std::isnan(n)) return "NaN";
  if (std::isinf(n)) return n > 0 ? "Infinity" : "-Infinity";
  if (n == 0) return "0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), std::fabs(n), std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  size_t e = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  int exponent = std::atoi(sci.c_str() + e + 1);
  int k = static_cast<int>(digits.size());
  int point = exponent + 1;  // digits * 10^(point - k)
  std::string out = n < 0 ? "-" : "";
  if (k <= point && point <= 21) {
    out += digits + std::string(point - k, '0');
  } else if (0 < point && point <= 21) {
    out += digits.substr(0, point) + "." + digits.substr(point);
  } else if (-6 < point && point <= 0) {
    out += "0." + std::string(-point, '0') + digits;
  } else {
    out += digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += exponent >= 0 ? "e+" : "e-";
    out += std::to_string(std::abs(exponent));
  }
  return out;
}

namespace {

// FloatValue.toString: integral values as Number.prototype.toFixed(1).
std::string float_display(double n) {
  if (n == 0 && std::signbit(n)) return "-0.0";
  if (std::isfinite(n) && n == std::trunc(n)) {
    if (std::fabs(n) >= 1e21) return js_number(n);
    char buf[400];
    std::snprintf(buf, sizeof(buf), "%.1f", n);
    return buf;
  }
  return js_number(n);
}

// JSON.stringify's escapes for quote, backslash and control characters.
std::string escape_control(char32_t c) {
  switch (c) {
    case '"':
      return "\\\"";
    case '\\':
      return "\\\\";
    case '\b':
      return "\\b";
    case '\f':
      return "\\f";
    case '\n':
      return "\\n";
    case '\r':
      return "\\r";
    case '\t':
      return "\\t";
    default: {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      return buf;
    }
  }
}

void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  static const char* kHex = "0123456789abcdef";
  auto hex4 = [&](unsigned u) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(u >> shift) & 0xf];
  };
  out += '"';
  if (ensure_ascii) {
    for (char32_t c : decode_utf8(s)) {
      if (c == '"' || c == '\\' || c < 0x20) {
        out += escape_control(c);
      } else if (c < 0x7f) {
        out += static_cast<char>(c);
      } else if (c < 0x10000) {
        hex4(c);
      } else {
        hex4(0xd800 + ((c - 0x10000) >> 10));
        hex4(0xdc00 + ((c - 0x10000) & 0x3ff));
      }
    }
  } else {
    for (char ch : s) {
      unsigned char c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\' || c < 0x20) {
        out += escape_control(c);
      } else {
        out += ch;
      }
    }
  }
  out += '"';
}

}  // namespace

std::string to_display(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return "";
    case Kind::kBool:
      return v.boolean ? "true" : "false";
    case Kind::kInt:
      return js_number(v.number);
    case Kind::kFloat:
      return float_display(v.number);
    case Kind::kString:
      return v.str;
    case Kind::kFunction:
      return "function";
    default:
      return to_json(v, JsonOptions{}, 0, "undefined");
  }
}

std::string to_raw_string(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNull:
      return "undefined";
    case Kind::kBool:
      return v.boolean ? "true" : "false";
    case Kind::kInt:
    case Kind::kFloat:
      return js_number(v.number);
    case Kind::kString:
      return v.str;
    case Kind::kArray:
    case Kind::kTuple: {
      // Array.prototype.join calls each element's RuntimeValue.toString.
      std::string out;
      for (size_t i = 0; i < v.array->size(); ++i) {
        const Value& item = (*v.array)[i];
        out += (i ? "," : "") + (item.is_nullish() ? std::string("undefined") : to_display(item));
      }
      return out;
    }
    case Kind::kFunction:
      return "function";
    default:
      return "[object Map]";
  }
}

std::string to_json(const Value& v, const JsonOptions& options, int line, const char* undefined_as,
                    int depth) {
  std::string item_sep = options.indent ? "," : ", ";
  std::string key_sep = ": ";
  if (options.has_separators) {
    item_sep = options.item_separator;
    key_sep = options.key_separator;
  }
  switch (v.kind) {
    case Kind::kNull:
      return "null";
    case Kind::kUndefined:
      return undefined_as;
    case Kind::kBool:
      return v.boolean ? "true" : "false";
    case Kind::kInt:
    case Kind::kFloat:
      return std::isfinite(v.number) ? js_number(v.number) : "null";
    case Kind::kString: {
      std::string out;
      append_json_string(out, v.str, options.ensure_ascii);
      return out;
    }
    case Kind::kArray:
    case Kind::kObject:
    case Kind::kNamespace:
      break;
    default:
      throw TemplateError(line, std::string("Cannot convert to JSON: ") + kind_name(v.kind));
  }
  std::string indent(options.indent > 0 ? options.indent : 0, ' ');
  std::string base_pad = "\n";
  for (int i = 0; i < depth; ++i) base_pad += indent;
  std::string child_pad = base_pad + indent;
  std::vector<std::string> parts;
  if (v.kind == Kind::kArray) {
    for (const Value& item : *v.array) {
      parts.push_back(to_json(item, options, line, undefined_as, depth + 1));
    }
  } else {
    auto entries = v.object->entries;
    if (options.sort_keys) {
      std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
        std::string la = js_lower(a.first), lb = js_lower(b.first);
        return la != lb ? la < lb : a.first > b.first;  // localeCompare puts "a" before "A"
      });
    }
    for (const auto& [key, value] : entries) {
      std::string part = options.indent ? child_pad : "";
      append_json_string(part, key, options.ensure_ascii);
      part += key_sep + to_json(value, options, line, undefined_as, depth + 1);
      parts.push_back(std::move(part));
    }
  }
  bool is_array = v.kind == Kind::kArray;
  std::string out = is_array ? "[" : "{";
  bool pretty = options.indent && !parts.empty();
  if (pretty && is_array) out += child_pad;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += item_sep + (pretty && is_array ? child_pad : "");
    out += parts[i];
  }
  if (pretty) out += base_pad;
  out += is_array ? "]" : "}";
  return out;
}

namespace {

// Number(string) for loose equality: trimmed, empty is 0, otherwise a full decimal literal.
double js_string_to_number(const std::string& s) {
  std::string t = js_trim(s, true, true);
  if (t.empty()) return 0;
  if (t == "Infinity" || t == "+Infinity") return INFINITY;
  if (t == "-Infinity") return -INFINITY;
  char* end = nullptr;
  double d = std::strtod(t.c_str(), &end);
  bool letters = t.find_first_of("iInNxXpP") != std::string::npos;
  return end == t.c_str() + t.size() && !letters ? d : NAN;
}

const void* identity(const Value& v) {
  if (v.array) return v.array.get();
  if (v.object) return v.object.get();
  return v.function.get();
}

}  // namespace

bool strict_equal(const Value& a, const Value& b) {
  if (a.is_nullish() || b.is_nullish()) return a.is_nullish() && b.is_nullish();
  if (a.is_number() && b.is_number()) return a.number == b.number;
  if (a.kind == Kind::kBool && b.kind == Kind::kBool) return a.boolean == b.boolean;
  if (a.kind == Kind::kString && b.kind == Kind::kString) return a.str == b.str;
  if (a.kind == Kind::kString || b.kind == Kind::kString || a.kind == Kind::kBool ||
      b.kind == Kind::kBool || a.is_number() || b.is_number()) {
    return false;
  }
  return identity(a) == identity(b);
}

bool loose_equal(const Value& a, const Value& b) {
  if (a.is_nullish() || b.is_nullish()) return a.is_nullish() && b.is_nullish();
  auto primitive = [](const Value& v) {
    return v.is_number() || v.kind == Kind::kBool || v.kind == Kind::kString;
  };
  if (primitive(a) && primitive(b)) {
    if (a.kind == Kind::kString && b.kind == Kind::kString) return a.str == b.str;
    auto num = [](const Value& v) {
      if (v.kind == Kind::kBool) return v.boolean ? 1.0 : 0.0;
      if (v.kind == Kind::kString) return js_string_to_number(v.str);
      return v.number;
    };
    return num(a) == num(b);
  }
  if (primitive(a) || primitive(b)) return false;
  return identity(a) == identity(b);
}

bool js_whitespace(char32_t c) {
  if (c <= 32) return c == 32 || (c >= 9 && c <= 13);
  return c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000 || c == 0xfeff;
}

std::vector<char32_t> decode_utf8(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    char32_t cp = extra <= 0 ? c : c & (0x3f >> extra);
    bool ok = extra >= 0;
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    }
    if (!ok) {
      out.push_back(0xfffd);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += extra + 1;
  }
  return out;
}

std::string encode_utf8(const std::vector<char32_t>& code_points) {
  std::string out;
  for (char32_t c : code_points) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xe0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (c & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

std::string js_trim(std::string_view s, bool start, bool end) {
  std::vector<char32_t> cps = decode_utf8(s);
  size_t b = 0, e = cps.size();
  if (start) {
    while (b < e && js_whitespace(cps[b])) ++b;
  }
  if (end) {
    while (e > b && js_whitespace(cps[e - 1])) --e;
  }
  if (b == 0 && e == cps.size()) return std::string(s);
  return encode_utf8(std::vector<char32_t>(cps.begin() + b, cps.begin() + e));
}

size_t utf16_length(std::string_view s) {
  size_t n = 0;
  for (char32_t c : decode_utf8(s)) n += c >= 0x10000 ? 2 : 1;
  return n;
}

namespace {

char32_t map_case(char32_t c, bool upper) {
  auto shift = [&](char32_t lo_begin, char32_t lo_end, char32_t delta) -> char32_t {
    if (upper && c >= lo_begin && c <= lo_end) return c - delta;
    if (!upper && c >= lo_begin - delta && c <= lo_end - delta) return c + delta;
    return 0;
  };
  if (c < 0x80) {
    if (upper && c >= 'a' && c <= 'z') return c - 32;
    if (!upper && c >= 'A' && c <= 'Z') return c + 32;
    return c;
  }
  if (c == 0xf7 || c == 0xd7) return c;  // division and multiplication signs
  if (upper && c == 0xff) return 0x178;
  if (!upper && c == 0x178) return 0xff;
  if (upper && c == 0x3c2) return 0x3a3;  // final sigma
  for (auto [begin, end, delta] : {std::tuple<char32_t, char32_t, char32_t>{0xe0, 0xfe, 0x20},
                                   {0x3b1, 0x3c9, 0x20},
                                   {0x430, 0x44f, 0x20},
                                   {0x450, 0x45f, 0x50}}) {
    if (char32_t m = shift(begin, end, delta)) return m;
  }
  return c;
}

std::string map_case(std::string_view s, bool upper) {
  std::vector<char32_t> out;
  for (char32_t c : decode_utf8(s)) {
    if (upper && c == 0xdf) {  // ß has no single-letter uppercase
      out.insert(out.end(), {'S', 'S'});
    } else {
      out.push_back(map_case(c, upper));
    }
  }
  return encode_utf8(out);
}

}  // namespace

std::string js_upper(std::string_view s) { return map_case(s, true); }
std::string js_lower(std::string_view s) { return map_case(s, false); }

}  // namespace weft::serve::jinja
