// Expressions of chat templates, by @huggingface/jinja's parser.ts: its operator precedence
// (if-else, or, and, not, comparisons, +, *, **, is, |, unary signs, calls and members) and its
// error cases.
#include <algorithm>
#include <cstdlib>
#include <initializer_list>

#include "runtime/serve/jinja_parser.h"

namespace weft::serve::jinja {

NodePtr Parser::expression_sequence(bool primary_only) {
  int line = peek().line;
  NodePtr first = primary_only ? primary() : expression();
  if (!is(Tok::kComma)) return first;
  NodePtr tuple = make(NodeKind::kTuple, line);
  tuple->a.push_back(std::move(first));
  while (is(Tok::kComma)) {
    ++cur_;
    tuple->a.push_back(primary_only ? primary() : expression());
  }
  return tuple;
}

NodePtr Parser::if_expression() {
  DepthGuard guard(depth_, peek().line);
  NodePtr a = or_expression();
  if (!is_identifier("if")) return a;
  int line = peek().line;
  ++cur_;
  NodePtr test = or_expression();
  if (is_identifier("else")) {
    ++cur_;
    NodePtr node = make(NodeKind::kTernary, line);
    node->x = std::move(test);
    node->y = std::move(a);
    node->z = if_expression();
    return node;
  }
  NodePtr node = make(NodeKind::kSelect, line);
  node->x = std::move(a);
  node->y = std::move(test);
  return node;
}

namespace {

NodePtr binary(std::string op, NodePtr left, NodePtr right, int line) {
  NodePtr node = make(NodeKind::kBinary, line);
  node->str = std::move(op);
  node->x = std::move(left);
  node->y = std::move(right);
  return node;
}

}  // namespace

NodePtr Parser::or_expression() {
  NodePtr left = and_expression();
  while (is_identifier("or")) {
    int line = peek().line;
    ++cur_;
    left = binary("or", std::move(left), and_expression(), line);
  }
  return left;
}

NodePtr Parser::and_expression() {
  NodePtr left = not_expression();
  while (is_identifier("and")) {
    int line = peek().line;
    ++cur_;
    left = binary("and", std::move(left), not_expression(), line);
  }
  return left;
}

NodePtr Parser::not_expression() {
  DepthGuard guard(depth_, peek().line);
  if (!is_identifier("not")) return comparison();
  NodePtr node = make(NodeKind::kUnary, peek().line);
  ++cur_;
  node->str = "not";
  node->x = not_expression();
  return node;
}

NodePtr Parser::comparison() {
  NodePtr left = additive();
  while (true) {
    std::string op;
    int line = peek().line;
    if (is_identifier("not") && is_identifier("in", 1)) {
      op = "not in";
      cur_ += 2;
    } else if (is_identifier("in") || is(Tok::kComparison)) {
      op = peek().value;
      ++cur_;
    } else {
      return left;
    }
    left = binary(op, std::move(left), additive(), line);
  }
}

NodePtr Parser::additive() {
  NodePtr left = multiplicative();
  while (is(Tok::kAdditive)) {
    const Token& op = tokens_[cur_++];
    left = binary(op.value, std::move(left), multiplicative(), op.line);
  }
  return left;
}

NodePtr Parser::multiplicative() {
  NodePtr left = power();
  while (is(Tok::kMultiplicative)) {
    const Token& op = tokens_[cur_++];
    left = binary(op.value, std::move(left), power(), op.line);
  }
  return left;
}

NodePtr Parser::power() {
  NodePtr left = test_expression();
  while (is(Tok::kExponent)) {
    const Token& op = tokens_[cur_++];
    left = binary(op.value, std::move(left), test_expression(), op.line);
  }
  return left;
}

NodePtr Parser::test_expression() {
  NodePtr operand = filter_expression();
  while (is_identifier("is")) {
    NodePtr node = make(NodeKind::kTest, peek().line);
    ++cur_;
    if (is_identifier("not")) {
      node->flag = true;
      ++cur_;
    }
    NodePtr test = primary();
    if (test->kind != NodeKind::kIdentifier) fail("expected a test name after 'is'");
    node->str = test->str;
    node->x = std::move(operand);
    operand = std::move(node);
  }
  return operand;
}

NodePtr Parser::filter_expression() {
  NodePtr operand = unary_sign();
  while (is(Tok::kPipe)) {
    NodePtr node = make(NodeKind::kFilter, peek().line);
    ++cur_;
    NodePtr filter = primary();
    if (filter->kind != NodeKind::kIdentifier) fail("expected a filter name after '|'");
    if (is(Tok::kOpenParen)) filter = call(std::move(filter));
    node->x = std::move(operand);
    node->y = std::move(filter);
    operand = std::move(node);
  }
  return operand;
}

NodePtr Parser::unary_sign() {
  DepthGuard guard(depth_, peek().line);
  const Token& t = peek();
  if ((t.type == Tok::kUnary || t.type == Tok::kAdditive) && (t.value == "-" || t.value == "+")) {
    NodePtr node = make(NodeKind::kUnary, t.line);
    node->str = t.value;
    ++cur_;
    node->x = unary_sign();
    return node;
  }
  return call_member();
}

NodePtr Parser::call_member() {
  NodePtr m = member(primary());
  return is(Tok::kOpenParen) ? call(std::move(m)) : std::move(m);
}

NodePtr Parser::call(NodePtr callee) {
  NodePtr node = make(NodeKind::kCall, peek().line);
  expect(Tok::kOpenParen, "'('");
  node->x = std::move(callee);
  node->a = arguments(false);
  expect(Tok::kCloseParen, "')'");
  NodePtr m = member(std::move(node));
  return is(Tok::kOpenParen) ? call(std::move(m)) : std::move(m);
}

std::vector<NodePtr> Parser::arguments(bool parameters) {
  std::vector<NodePtr> args;
  bool saw_keyword = false;
  while (!is(Tok::kCloseParen)) {
    if (is(Tok::kEnd)) fail("expected ')' before the end of the template");
    int line = peek().line;
    bool keyword_spread = is(Tok::kExponent);
    bool spread = is(Tok::kMultiplicative) && peek().value == "*";
    if (parameters && (keyword_spread || spread)) fail("argument unpacking in a parameter list");
    if (keyword_spread || spread) {
      ++cur_;
      NodePtr node = make(keyword_spread ? NodeKind::kKeywordSpread : NodeKind::kSpread, line);
      node->x = expression();
      args.push_back(std::move(node));
      if (is(Tok::kComma)) ++cur_;
      continue;
    }
    NodePtr arg = expression();
    if (is(Tok::kEquals)) {
      ++cur_;
      if (arg->kind != NodeKind::kIdentifier) fail("expected an identifier before '='");
      NodePtr kw = make(NodeKind::kKeywordArg, line);
      kw->str = arg->str;
      kw->x = expression();
      arg = std::move(kw);
      saw_keyword = true;
    } else if (saw_keyword) {
      fail(parameters ? "non-default parameter follows default parameter"
                      : "positional argument follows keyword argument");
    }
    if (parameters && arg->kind != NodeKind::kIdentifier && arg->kind != NodeKind::kKeywordArg) {
      fail("expected a parameter name");
    }
    args.push_back(std::move(arg));
    if (is(Tok::kComma)) ++cur_;
  }
  return args;
}

NodePtr Parser::member(NodePtr object) {
  while (is(Tok::kDot) || is(Tok::kOpenSquare)) {
    NodePtr node = make(NodeKind::kMember, peek().line);
    bool computed = is(Tok::kOpenSquare);
    ++cur_;
    if (computed) {
      node->y = subscript();
      expect(Tok::kCloseSquare, "']'");
    } else {
      node->y = primary();
      if (node->y->kind != NodeKind::kIdentifier && node->y->kind != NodeKind::kInteger) {
        fail("expected a name after '.'");
      }
    }
    node->flag = computed;
    node->x = std::move(object);
    object = std::move(node);
  }
  return object;
}

NodePtr Parser::subscript() {
  int line = peek().line;
  std::vector<NodePtr> parts;
  bool is_slice = false;
  while (!is(Tok::kCloseSquare)) {
    if (is(Tok::kEnd)) fail("expected ']' before the end of the template");
    if (is(Tok::kColon)) {
      parts.push_back(nullptr);
      ++cur_;
      is_slice = true;
    } else {
      parts.push_back(expression());
      if (is(Tok::kColon)) {
        ++cur_;
        is_slice = true;
      }
    }
  }
  if (parts.empty()) fail("empty subscript []");
  if (!is_slice) return std::move(parts[0]);
  if (parts.size() > 3) fail("a slice takes at most 3 parts");
  NodePtr node = make(NodeKind::kSlice, line);
  parts.resize(3);
  node->x = std::move(parts[0]);
  node->y = std::move(parts[1]);
  node->z = std::move(parts[2]);
  return node;
}

NodePtr Parser::primary() {
  const Token& t = peek();
  if (t.type == Tok::kEnd) fail("unexpected end of template in an expression");
  ++cur_;
  switch (t.type) {
    case Tok::kNumber: {
      bool is_float = t.value.find('.') != std::string::npos;
      NodePtr node = make(is_float ? NodeKind::kFloat : NodeKind::kInteger, t.line);
      node->num = std::strtod(t.value.c_str(), nullptr);  // overflow gives Infinity, as in JS
      return node;
    }
    case Tok::kString: {
      NodePtr node = make(NodeKind::kString, t.line);
      node->str = t.value;
      while (is(Tok::kString)) node->str += tokens_[cur_++].value;
      return node;
    }
    case Tok::kIdentifier: {
      NodePtr node = make(NodeKind::kIdentifier, t.line);
      node->str = t.value;
      return node;
    }
    case Tok::kOpenParen: {
      NodePtr e = expression_sequence(false);
      expect(Tok::kCloseParen, "')'");
      return e;
    }
    case Tok::kOpenSquare: {
      NodePtr node = make(NodeKind::kArray, t.line);
      while (!is(Tok::kCloseSquare)) {
        if (is(Tok::kEnd)) fail("expected ']' before the end of the template");
        node->a.push_back(expression());
        if (is(Tok::kComma)) ++cur_;
      }
      ++cur_;
      return node;
    }
    case Tok::kOpenCurly: {
      NodePtr node = make(NodeKind::kDict, t.line);
      while (!is(Tok::kCloseCurly)) {
        if (is(Tok::kEnd)) fail("expected '}' before the end of the template");
        node->a.push_back(expression());
        expect(Tok::kColon, "':' in a dict literal");
        node->b.push_back(expression());
        if (is(Tok::kComma)) ++cur_;
      }
      ++cur_;
      return node;
    }
    default:
      --cur_;
      fail("unexpected '" + describe() + "'");
  }
}

}  // namespace weft::serve::jinja
