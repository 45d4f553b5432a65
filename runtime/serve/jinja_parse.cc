// Parsing of chat templates into the syntax tree, following @huggingface/jinja's parser.ts
// (its statements and its error cases); expressions are in jinja_parse_expression.cc.
#include <algorithm>
#include <cstdlib>
#include <initializer_list>

#include "runtime/serve/jinja_parser.h"

namespace weft::serve::jinja {

NodePtr Parser::any() {
  const Token& t = peek();
  switch (t.type) {
    case Tok::kComment:
      ++cur_;
      return make(NodeKind::kComment, t.line);
    case Tok::kText: {
      NodePtr text = make(NodeKind::kText, t.line);
      text->str = t.value;
      ++cur_;
      return text;
    }
    case Tok::kOpenStatement:
      return statement();
    case Tok::kOpenExpression: {
      ++cur_;
      NodePtr e = expression();
      expect(Tok::kCloseExpression, "}}");
      return e;
    }
    default:
      fail("unexpected '" + describe() + "'");
  }
}

NodePtr Parser::statement() {
  DepthGuard guard(depth_, peek().line);
  int line = expect(Tok::kOpenStatement, "{%").line;
  if (!is(Tok::kIdentifier)) fail("expected a statement name after {%");
  std::string name = peek().value;
  ++cur_;
  if (name == "set") return set_statement(line);
  if (name == "if") {
    NodePtr node = if_statement(line);
    close_block("endif");
    return node;
  }
  if (name == "macro") {
    NodePtr node = macro_statement(line);
    close_block("endmacro");
    return node;
  }
  if (name == "for") {
    NodePtr node = for_statement(line);
    close_block("endfor");
    return node;
  }
  if (name == "call") {
    NodePtr node = make(NodeKind::kCallBlock, line);
    if (is(Tok::kOpenParen)) {
      ++cur_;
      node->a = arguments(true);
      expect(Tok::kCloseParen, "')'");
    }
    NodePtr callee = primary();
    if (callee->kind != NodeKind::kIdentifier) fail("expected a macro name after {% call %}");
    NodePtr call_expr = make(NodeKind::kCall, line);
    call_expr->x = std::move(callee);
    expect(Tok::kOpenParen, "'('");
    call_expr->a = arguments(false);
    expect(Tok::kCloseParen, "')'");
    node->x = std::move(call_expr);
    expect(Tok::kCloseStatement, "%}");
    node->b = block_until({"endcall"}, "call", line);
    close_block("endcall");
    return node;
  }
  if (name == "break" || name == "continue") {
    expect(Tok::kCloseStatement, "%}");
    return make(name == "break" ? NodeKind::kBreak : NodeKind::kContinue, line);
  }
  if (name == "filter") {
    NodePtr node = make(NodeKind::kFilterBlock, line);
    node->x = primary();
    if (node->x->kind == NodeKind::kIdentifier && is(Tok::kOpenParen))
      node->x = call(std::move(node->x));
    expect(Tok::kCloseStatement, "%}");
    node->a = block_until({"endfilter"}, "filter", line);
    close_block("endfilter");
    return node;
  }
  throw TemplateError(line, "unknown statement '" + name + "'");
}

NodePtr Parser::set_statement(int line) {
  NodePtr node = make(NodeKind::kSet, line);
  node->x = expression_sequence(false);
  if (is(Tok::kEquals)) {
    ++cur_;
    node->y = expression_sequence(false);
  } else {
    expect(Tok::kCloseStatement, "'=' or %}");
    node->a = block_until({"endset"}, "set", line);
    expect(Tok::kOpenStatement, "{%");
    expect_keyword("endset");
  }
  expect(Tok::kCloseStatement, "%}");
  return node;
}

NodePtr Parser::if_statement(int line) {
  NodePtr node = make(NodeKind::kIf, line);
  node->x = expression();
  expect(Tok::kCloseStatement, "%}");
  node->a = block_until({"elif", "else", "endif"}, "if", line);
  if (is_statement({"elif"})) {
    int elif_line = peek().line;
    cur_ += 2;
    node->b.push_back(if_statement(elif_line));
  } else if (is_statement({"else"})) {
    cur_ += 2;
    expect(Tok::kCloseStatement, "%}");
    node->b = block_until({"endif"}, "if", line);
  }
  return node;
}

NodePtr Parser::macro_statement(int line) {
  NodePtr node = make(NodeKind::kMacro, line);
  NodePtr name = primary();
  if (name->kind != NodeKind::kIdentifier) fail("expected a macro name");
  node->str = name->str;
  expect(Tok::kOpenParen, "'('");
  node->a = arguments(true);
  expect(Tok::kCloseParen, "')'");
  expect(Tok::kCloseStatement, "%}");
  node->b = block_until({"endmacro"}, "macro", line);
  return node;
}

NodePtr Parser::for_statement(int line) {
  NodePtr node = make(NodeKind::kFor, line);
  node->x = expression_sequence(true);
  if (node->x->kind != NodeKind::kIdentifier && node->x->kind != NodeKind::kTuple) {
    fail("expected a loop variable or tuple after {% for");
  }
  if (!is_identifier("in")) fail("expected 'in' after the loop variable");
  ++cur_;
  node->y = expression();
  expect(Tok::kCloseStatement, "%}");
  node->a = block_until({"endfor", "else"}, "for", line);
  if (is_statement({"else"})) {
    cur_ += 2;
    expect(Tok::kCloseStatement, "%}");
    node->b = block_until({"endfor"}, "for", line);
  }
  return node;
}

std::unique_ptr<Node> parse_template(std::string_view source) {
  return Parser(tokenize(source)).program();
}

}  // namespace weft::serve::jinja
