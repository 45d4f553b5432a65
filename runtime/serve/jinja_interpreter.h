// The tree-walking evaluator behind jinja::Template, following @huggingface/jinja's runtime.ts:
// statements, scopes, loops and macros in jinja_interpreter.cc; expressions and operators in
// jinja_eval.cc; filters in jinja_filters.cc; tests and the methods of strings and dicts in
// jinja_builtins.cc.
#pragma once

#include <deque>
#include <string>
#include <unordered_map>

#include "runtime/serve/jinja_ast.h"
#include "runtime/serve/jinja_value.h"

namespace weft::serve::jinja {

class Env {
 public:
  explicit Env(Env* parent) : parent_(parent) {}
  // The value bound in this scope or an enclosing one; undefined if none.
  Value lookup(const std::string& name) const;
  void set(const std::string& name, Value value) { vars_[name] = std::move(value); }
  bool has_local(const std::string& name) const { return vars_.count(name) > 0; }
  const Value* local(const std::string& name) const;
  bool is_call_block = false;  // the scope a {% call %} block passes to its macro

 private:
  Env* parent_;
  std::unordered_map<std::string, Value> vars_;
};

// Positional arguments and keyword arguments of one call.
struct Args {
  Values positional;
  Object keywords;
  const Value* keyword(const std::string& name) const { return keywords.find(name); }
  // positional[i], else the keyword `name`, else nullptr.
  const Value* get(size_t i, const std::string& name) const;
};
Args split_args(const Values& args);

bool is_test(const std::string& name);

// Shared by the filters and the string methods (jinja_builtins.cc): JavaScript's
// value.replace(/\b\w/g, c => c.toUpperCase()); the first character upper-cased; a true
// boolean argument.
std::string title_case(const std::string& s);
std::string capitalize(const std::string& s);
bool is_bool(const Value* v);

class Interpreter {
 public:
  Interpreter();
  // Declares a context variable; fails on a name that is a global (as HF's Environment.set).
  void declare(const std::string& name, Value value);
  std::string run(const Node& program);

  [[noreturn]] void fail(const std::string& what) const { throw TemplateError(line_, what); }

  // jinja_filters.cc
  Value apply_filter(const Value& operand, const Node& filter, Env* env);
  Value jinja2_filter(const Value& operand, const Node& filter, Env* env);
  // jinja_builtins.cc
  // `arg`: the value equalto/eq compare with (selectattr's third argument).
  bool apply_test(const std::string& name, const Value& operand, const Value* arg = nullptr);
  // Methods and properties reached with `.name` on strings, arrays and dicts; undefined if none.
  Value builtin_member(const Value& object, const std::string& name);
  Args evaluate_args(const std::vector<std::unique_ptr<Node>>& nodes, Env* env);
  // compareRuntimeValues: numbers (and booleans), or strings; anything else fails.
  int compare(const Value& a, const Value& b, bool case_sensitive);

  Value eval(const Node& node, Env* env);
  // A string value, failing past kMaxOutputBytes (repeated doubling must not exhaust memory).
  Value checked_string(std::string s);

  static constexpr size_t kMaxOutputBytes = 16u << 20;
  static constexpr size_t kMaxArrayLength = 100'000;
  static constexpr int kMaxDepth = 400;  // nested blocks and macro calls

 private:
  void render_block(const std::vector<std::unique_ptr<Node>>& body, Env* env, std::string& out);
  void render_for(const Node& node, Env* env, std::string& out);
  void execute_set(const Node& node, Env* env);
  void define_macro(const Node& node, Env* env);
  Value call_block(const Node& node, Env* env);
  void bind_arguments(const std::string& macro, const std::vector<std::unique_ptr<Node>>& params,
                      int special, Values args, Env* scope);
  Value member(const Node& node, Env* env);
  Value slice(const Value& object, const Node& node, Env* env);
  Value binary(const Node& node, Env* env);
  Value unary(const Node& node, Env* env);
  Values call_arguments(const std::vector<std::unique_ptr<Node>>& nodes, Env* env);
  Env* new_env(Env* parent);
  void step();
  void enter();  // one level deeper; fails past kMaxDepth (the caller decrements depth_)
  void append(std::string& out, std::string_view text);

  std::deque<Env> envs_;  // every scope lives until the render ends (macros keep pointers)
  Env* globals_;
  int line_ = 1;
  int64_t steps_ = 0;
  int depth_ = 0;
};

}  // namespace weft::serve::jinja
