// The parser of chat templates (jinja_parse.cc: statements and the entry point;
// jinja_parse_expression.cc: expressions, by @huggingface/jinja's operator precedence). Internal
// to the jinja implementation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/serve/jinja_ast.h"
#include "runtime/serve/jinja_lexer.h"
#include "runtime/serve/jinja_value.h"

namespace weft::serve::jinja {

using NodePtr = std::unique_ptr<Node>;

inline NodePtr make(NodeKind kind, int line) {
  auto node = std::make_unique<Node>();
  node->kind = kind;
  node->line = line;
  return node;
}

// Bounds the parser's recursion so that a hostile template fails instead of overflowing the stack.
class DepthGuard {
 public:
  DepthGuard(int& depth, int line) : depth_(depth) {
    if (++depth_ > 200) throw TemplateError(line, "template nesting deeper than 200");
  }
  ~DepthGuard() { --depth_; }

 private:
  int& depth_;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {
    end_.type = Tok::kEnd;
    end_.line = tokens_.empty() ? 1 : tokens_.back().line;
  }

  NodePtr program() {
    NodePtr root = make(NodeKind::kProgram, 1);
    while (cur_ < tokens_.size()) root->a.push_back(any());
    return root;
  }

 private:
  const Token& peek(size_t ahead = 0) const {
    return cur_ + ahead < tokens_.size() ? tokens_[cur_ + ahead] : end_;
  }
  [[noreturn]] void fail(const std::string& what) const { throw TemplateError(peek().line, what); }
  bool is(Tok type) const { return peek().type == type; }
  bool is_identifier(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).type == Tok::kIdentifier && peek(ahead).value == name;
  }
  bool is_statement(std::initializer_list<std::string_view> names) const {
    if (!is(Tok::kOpenStatement) || peek(1).type != Tok::kIdentifier) return false;
    return std::find(names.begin(), names.end(), peek(1).value) != names.end();
  }
  const Token& expect(Tok type, const char* what) {
    if (!is(type)) {
      fail(std::string("expected ") + what +
           (is(Tok::kEnd) ? " before the end of the template" : ", got '" + describe() + "'"));
    }
    return tokens_[cur_++];
  }
  std::string describe() const {
    const Token& t = peek();
    switch (t.type) {
      case Tok::kText:
        return "text";
      case Tok::kString:
        return "'" + t.value + "'";
      case Tok::kOpenStatement:
        return "{%";
      case Tok::kCloseStatement:
        return "%}";
      case Tok::kOpenExpression:
        return "{{";
      case Tok::kCloseExpression:
        return "}}";
      default:
        return t.value;
    }
  }
  void expect_keyword(const char* name) {
    if (!is_identifier(name)) fail(std::string("expected '") + name + "'");
    ++cur_;
  }
  // Statements up to one of `ends`; fails at the end of the template naming the open block.
  std::vector<NodePtr> block_until(std::initializer_list<std::string_view> ends, const char* block,
                                   int opened_line) {
    std::vector<NodePtr> body;
    while (!is_statement(ends)) {
      if (is(Tok::kEnd)) {
        throw TemplateError(opened_line, std::string("unclosed {% ") + block + " %} (missing {% " +
                                             std::string(*std::prev(ends.end())) + " %})");
      }
      body.push_back(any());
    }
    return body;
  }
  void close_block(const char* end_name) {
    expect(Tok::kOpenStatement, "{%");
    expect_keyword(end_name);
    expect(Tok::kCloseStatement, "%}");
  }

  NodePtr any();
  NodePtr statement();
  NodePtr set_statement(int line);
  NodePtr if_statement(int line);
  NodePtr macro_statement(int line);
  NodePtr for_statement(int line);
  NodePtr expression_sequence(bool primary);
  NodePtr expression() { return if_expression(); }
  NodePtr if_expression();
  NodePtr or_expression();
  NodePtr and_expression();
  NodePtr not_expression();
  NodePtr comparison();
  NodePtr additive();
  NodePtr multiplicative();
  NodePtr power();
  NodePtr test_expression();
  NodePtr filter_expression();
  NodePtr unary_sign();
  NodePtr call_member();
  NodePtr call(NodePtr callee);
  std::vector<NodePtr> arguments(bool parameters);
  NodePtr member(NodePtr object);
  NodePtr subscript();
  NodePtr primary();

  std::vector<Token> tokens_;
  Token end_;
  size_t cur_ = 0;
  int depth_ = 0;  // nested expressions and blocks
};

}  // namespace weft::serve::jinja
