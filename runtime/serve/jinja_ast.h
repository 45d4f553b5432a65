// The syntax tree of a chat template and the parser that builds it. Lexing and grammar follow
// @huggingface/jinja (including its operator precedence: `is` binds tighter than `*`, filters
// tighter than `is`) and its default lstrip_blocks/trim_blocks preprocessing.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace weft::serve::jinja {

enum class NodeKind {
  // Statements.
  kProgram,  // a: body
  kText,     // str
  kIf,       // x: test, a: body, b: alternate
  kFor,      // x: loop variable (identifier or tuple), y: iterable, a: body, b: else block
  kBreak,
  kContinue,
  kSet,    // x: assignee, y: value (null: block set), a: body
  kMacro,  // str: name, a: parameters, b: body
  kComment,
  kCallBlock,    // x: call expression, a: caller parameters, b: body
  kFilterBlock,  // x: filter (identifier or call), a: body
  // Expressions.
  kIdentifier,     // str
  kInteger,        // num
  kFloat,          // num
  kString,         // str
  kArray,          // a
  kTuple,          // a
  kDict,           // a: keys, b: values
  kMember,         // x: object, y: property, flag: computed (`[...]`)
  kSlice,          // x: start, y: stop, z: step (each may be null)
  kCall,           // x: callee, a: arguments
  kBinary,         // str: operator, x, y
  kUnary,          // str: operator, x
  kFilter,         // x: operand, y: filter (identifier or call)
  kTest,           // x: operand, str: test name, flag: negated
  kSelect,         // x: value, y: condition (`a if c` without else)
  kTernary,        // x: condition, y: if true, z: if false
  kKeywordArg,     // str: name, x: value
  kSpread,         // x (`*args`)
  kKeywordSpread,  // x (`**kwargs`)
};

struct Node {
  NodeKind kind;
  int line = 0;
  std::string str;
  double num = 0;
  bool flag = false;
  std::unique_ptr<Node> x, y, z;
  std::vector<std::unique_ptr<Node>> a, b;
};

// Throws TemplateError naming the line on a syntax error.
std::unique_ptr<Node> parse_template(std::string_view source);

}  // namespace weft::serve::jinja
