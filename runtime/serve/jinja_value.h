// The value model of the chat-template interpreter. It mirrors @huggingface/jinja's runtime
// values (the oracle), not Python's: numbers are JavaScript doubles tagged integer or float,
// objects keep insertion order, and strings print, compare and measure as JavaScript does.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace weft::serve::jinja {

// Thrown inside the interpreter; Template turns it into InvalidArgument "chat template line N".
struct TemplateError : std::runtime_error {
  TemplateError(int line, const std::string& what) : std::runtime_error(what), line(line) {}
  int line;
};

enum class Kind {
  kUndefined,
  kNull,
  kBool,
  kInt,
  kFloat,
  kString,
  kArray,
  kTuple,
  kObject,
  kKwargs,  // the keyword arguments of a call, passed last
  kNamespace,
  kFunction,
};

struct Value;
using Values = std::vector<Value>;

struct Object {
  std::vector<std::pair<std::string, Value>> entries;  // insertion order, as a JS Map
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value value);
};

class Env;
// Arguments: positional values, then one kKwargs value when keywords were given.
using Function = std::function<Value(Values& args, Env* call_site)>;

struct Value {
  Value() = default;
  explicit Value(Kind k) : kind(k) {}

  Kind kind = Kind::kUndefined;
  bool boolean = false;
  double number = 0;  // kInt and kFloat
  std::string str;
  std::shared_ptr<Values> array;   // kArray, kTuple
  std::shared_ptr<Object> object;  // kObject, kKwargs, kNamespace
  std::shared_ptr<Function> function;

  static Value null() { return Value{Kind::kNull}; }
  static Value of_bool(bool b);
  static Value of_int(double n);
  static Value of_float(double n);
  static Value of_string(std::string s);
  static Value of_array(Values items, Kind kind = Kind::kArray);
  static Value of_object(Object object, Kind kind = Kind::kObject);
  static Value of_function(Function fn);
  // JSON numbers become integers when integral, as JSON.parse then convertToRuntimeValues do.
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  bool is_array() const { return kind == Kind::kArray || kind == Kind::kTuple; }
  bool is_object() const { return kind == Kind::kObject || kind == Kind::kKwargs; }
  bool is_nullish() const { return kind == Kind::kNull || kind == Kind::kUndefined; }
  bool truthy() const;
};

const char* kind_name(Kind kind);

// How `{{ v }}` prints v (RuntimeValue.toString).
std::string to_display(const Value& v);
// JavaScript's String(v.value): what `~` and string `+` concatenate.
std::string to_raw_string(const Value& v);
// JavaScript's Number.prototype.toString.
std::string js_number(double n);

struct JsonOptions {
  int indent = 0;  // 0: one line with ", " and ": "
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_separators = false;
  std::string item_separator, key_separator;
};
// The tojson filter; undefined prints `undefined_as` ("null" for tojson, "undefined" inside
// printed lists and dicts).
std::string to_json(const Value& v, const JsonOptions& options, int line,
                    const char* undefined_as = "null", int depth = 0);

// JavaScript loose (==) and strict (===, Array.includes, Set) equality of the raw values.
bool loose_equal(const Value& a, const Value& b);
bool strict_equal(const Value& a, const Value& b);

// Strings as JavaScript sees them; UTF-8 in and out.
bool js_whitespace(char32_t c);
std::string js_trim(std::string_view s, bool start, bool end);
std::vector<char32_t> decode_utf8(std::string_view s);
std::string encode_utf8(const std::vector<char32_t>& code_points);
size_t utf16_length(std::string_view s);
// Case mapping of ASCII, Latin-1, Greek and Cyrillic letters (JavaScript maps all of Unicode).
std::string js_upper(std::string_view s);
std::string js_lower(std::string_view s);

}  // namespace weft::serve::jinja
