// Parsing of chat templates into the syntax tree, following @huggingface/jinja's parser.ts
// (its statements, its operator precedence and its error cases).
#include <algorithm>
#include <cstdlib>
#include <initializer_list>

#include "runtime/serve/jinja_ast.h"
#include "runtime/serve/jinja_lexer.h"
#include "runtime/serve/jinja_value.h"

namespace weft::serve::jinja {
namespace {

using NodePtr = std::unique_ptr<Node>;

NodePtr make(NodeKind kind, int line) {
  auto node = std::make_unique<Node>();
  node->kind = kind;
  node->line = line;
  return node;
}

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

NodePtr binary(std::string op, NodePtr left, NodePtr right, int line) {
  NodePtr node = make(NodeKind::kBinary, line);
  node->str = std::move(op);
  node->x = std::move(left);
  node->y = std::move(right);
  return node;
}

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

}  // namespace

std::unique_ptr<Node> parse_template(std::string_view source) {
  return Parser(tokenize(source)).program();
}

}  // namespace weft::serve::jinja
