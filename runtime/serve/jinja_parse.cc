// Preprocessing, lexing and parsing of chat templates, following @huggingface/jinja's
// lexer.ts and parser.ts so that whitespace and precedence come out identical.
#include <algorithm>
#include <initializer_list>

#include "runtime/serve/jinja_ast.h"
#include "runtime/serve/jinja_value.h"

namespace weft::serve::jinja {
namespace {

enum class Tok {
  kText,
  kNumber,
  kString,
  kIdentifier,
  kEquals,
  kOpenParen,
  kCloseParen,
  kOpenStatement,
  kCloseStatement,
  kOpenExpression,
  kCloseExpression,
  kOpenSquare,
  kCloseSquare,
  kOpenCurly,
  kCloseCurly,
  kComma,
  kDot,
  kColon,
  kPipe,
  kAdditive,
  kMultiplicative,
  kExponent,
  kComparison,
  kUnary,
  kComment,
  kEnd,  // past the last token
};

struct Token {
  Tok type;
  std::string value;
  int line;
};

// The template after HF's preprocessing, with the source line of every byte.
struct Source {
  std::string text;
  std::vector<int> line;
};

bool is_line_start(std::string_view s, size_t i) {
  if (i == 0) return true;
  char p = s[i - 1];
  if (p == '\n' || p == '\r') return true;
  // U+2028 and U+2029 also end a line for JavaScript's multiline `^`.
  return i >= 3 && s.substr(i - 3, 2) == "\xe2\x80" && (p == '\xa8' || p == '\xa9');
}

bool ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// HF's preprocess(): drop one final newline; lstrip_blocks (`^[ \t]*` before `{%`, `{#`, `{-`);
// trim_blocks (the newline after `%}`, `#}`, `-}`); remove {% generation %} tags.
Source preprocess(std::string_view src) {
  if (!src.empty() && src.back() == '\n') src.remove_suffix(1);
  std::vector<bool> keep(src.size(), true);
  for (size_t i = 0; i < src.size(); ++i) {
    if (!is_line_start(src, i)) continue;
    size_t j = i;
    while (j < src.size() && (src[j] == ' ' || src[j] == '\t')) ++j;
    if (j > i && j + 1 < src.size() && src[j] == '{' &&
        (src[j + 1] == '#' || src[j + 1] == '%' || src[j + 1] == '-')) {
      std::fill(keep.begin() + i, keep.begin() + j, false);
    }
  }
  for (size_t i = 0; i + 2 < src.size(); ++i) {
    if ((src[i] == '#' || src[i] == '%' || src[i] == '-') && src[i + 1] == '}' &&
        src[i + 2] == '\n') {
      keep[i + 2] = false;
    }
  }
  Source kept;
  int line = 1;
  for (size_t i = 0; i < src.size(); ++i) {
    if (keep[i]) {
      kept.text += src[i];
      kept.line.push_back(line);
    }
    if (src[i] == '\n') ++line;
  }
  // {%-? (end)?generation -?%} followed by whitespace.
  Source out;
  const std::string& t = kept.text;
  size_t last = 0;
  for (size_t pos = t.find("{%"); pos != std::string::npos; pos = t.find("{%", pos + 1)) {
    size_t i = pos + 2;
    bool lstrip = i < t.size() && t[i] == '-';
    if (lstrip) ++i;
    while (i < t.size() && ascii_space(t[i])) ++i;
    if (t.compare(i, 3, "end") == 0) i += 3;
    if (t.compare(i, 10, "generation") != 0) continue;
    i += 10;
    while (i < t.size() && ascii_space(t[i])) ++i;
    bool rstrip = i < t.size() && t[i] == '-';
    if (rstrip) ++i;
    if (t.compare(i, 2, "%}") != 0) continue;
    i += 2;
    size_t after = i;
    while (i < t.size() && ascii_space(t[i])) ++i;
    size_t end = pos;
    while (lstrip && end > last && ascii_space(t[end - 1])) --end;
    out.text += t.substr(last, end - last);
    out.line.insert(out.line.end(), kept.line.begin() + last, kept.line.begin() + end);
    if (!rstrip) {
      out.text += t.substr(after, i - after);
      out.line.insert(out.line.end(), kept.line.begin() + after, kept.line.begin() + i);
    }
    last = i;
    pos = i - 1;
  }
  out.text += t.substr(last);
  out.line.insert(out.line.end(), kept.line.begin() + last, kept.line.end());
  return out;
}

class Lexer {
 public:
  explicit Lexer(Source src) : src_(std::move(src)), s_(src_.text) {}

  std::vector<Token> run();

 private:
  int line_at(size_t pos) const {
    if (src_.line.empty()) return 1;
    return src_.line[std::min(pos, src_.line.size() - 1)];
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw TemplateError(line_at(pos_), what);
  }
  // Byte length of the JavaScript whitespace character at `pos`, 0 if none.
  size_t space_at(size_t pos) const;
  void skip_space() {
    while (pos_ < s_.size()) {
      size_t n = space_at(pos_);
      if (!n) break;
      pos_ += n;
    }
  }
  std::string consume_digits();
  std::string consume_string(char quote);
  void push(Tok type, std::string value, size_t at) {
    tokens_.push_back({type, std::move(value), line_at(at)});
  }
  void strip_trailing_text();

  Source src_;
  const std::string& s_;
  size_t pos_ = 0;
  int curly_depth_ = 0;
  std::vector<Token> tokens_;
};

size_t Lexer::space_at(size_t pos) const {
  unsigned char c = static_cast<unsigned char>(s_[pos]);
  if (c < 0x80) return ascii_space(static_cast<char>(c)) ? 1 : 0;
  size_t n = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
  std::vector<char32_t> cp = decode_utf8(std::string_view(s_).substr(pos, n));
  return cp.size() == 1 && js_whitespace(cp[0]) ? n : 0;
}

std::string Lexer::consume_digits() {
  size_t start = pos_;
  while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
  if (pos_ >= s_.size()) fail("unexpected end of template");
  return s_.substr(start, pos_ - start);
}

std::string Lexer::consume_string(char quote) {
  std::string out;
  while (true) {
    if (pos_ >= s_.size()) fail("unterminated string literal");
    char c = s_[pos_++];
    if (c == quote) return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (pos_ >= s_.size()) fail("unterminated string literal");
    char e = s_[pos_++];
    if (e == 'x' || e == 'u') {
      size_t len = e == 'x' ? 2 : 4;
      std::string hex = s_.substr(pos_, len);
      if (hex.size() != len ||
          hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
        fail("invalid hexadecimal escape sequence \\" + std::string(1, e) + hex);
      }
      out += encode_utf8({static_cast<char32_t>(std::stoul(hex, nullptr, 16))});
      pos_ += len;
      continue;
    }
    switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'v':
        out += '\v';
        break;
      case '\'':
      case '"':
      case '\\':
        out += e;
        break;
      default:
        fail("unexpected escaped character \\" + std::string(1, e));
    }
  }
}

void Lexer::strip_trailing_text() {
  if (!tokens_.empty() && tokens_.back().type == Tok::kText) {
    tokens_.back().value = js_trim(tokens_.back().value, false, true);
    if (tokens_.back().value.empty()) tokens_.pop_back();
  }
}

struct Rule {
  const char* seq;
  Tok type;
};

// Longest operators first where one is a prefix of another, as HF's ORDERED_MAPPING_TABLE.
constexpr Rule kRules[] = {
    {"{%", Tok::kOpenStatement},  {"%}", Tok::kCloseStatement},
    {"{{", Tok::kOpenExpression}, {"}}", Tok::kCloseExpression},
    {"(", Tok::kOpenParen},       {")", Tok::kCloseParen},
    {"{", Tok::kOpenCurly},       {"}", Tok::kCloseCurly},
    {"[", Tok::kOpenSquare},      {"]", Tok::kCloseSquare},
    {",", Tok::kComma},           {".", Tok::kDot},
    {":", Tok::kColon},           {"|", Tok::kPipe},
    {"<=", Tok::kComparison},     {">=", Tok::kComparison},
    {"==", Tok::kComparison},     {"!=", Tok::kComparison},
    {"<", Tok::kComparison},      {">", Tok::kComparison},
    {"+", Tok::kAdditive},        {"-", Tok::kAdditive},
    {"~", Tok::kAdditive},        {"**", Tok::kExponent},
    {"*", Tok::kMultiplicative},  {"//", Tok::kMultiplicative},
    {"/", Tok::kMultiplicative},  {"%", Tok::kMultiplicative},
    {"=", Tok::kEquals},
};

bool is_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::vector<Token> Lexer::run() {
  const size_t n = s_.size();
  while (pos_ < n) {
    Tok last = tokens_.empty() ? Tok::kEnd : tokens_.back().type;
    if (last == Tok::kEnd || last == Tok::kCloseStatement || last == Tok::kCloseExpression ||
        last == Tok::kComment) {
      size_t end = pos_;
      while (true) {
        end = s_.find('{', end);
        if (end == std::string::npos) {
          end = n;
          break;
        }
        char next = end + 1 < n ? s_[end + 1] : '\0';
        if (next == '%' || next == '{' || next == '#') break;
        ++end;
      }
      if (end > pos_) {
        push(Tok::kText, s_.substr(pos_, end - pos_), pos_);
        pos_ = end;
        continue;
      }
    }
    if (s_[pos_] == '{') {
      char next = pos_ + 1 < n ? s_[pos_ + 1] : '\0';
      if (next == '#') {
        size_t start = pos_;
        pos_ += 2;
        bool strip_before = pos_ < n && s_[pos_] == '-';
        if (strip_before) ++pos_;
        size_t end = s_.find("#}", pos_);
        if (end == std::string::npos) fail("missing end of comment tag #}");
        std::string comment = s_.substr(pos_, end - pos_);
        bool strip_after = !comment.empty() && comment.back() == '-';
        if (strip_before) strip_trailing_text();
        push(Tok::kComment, comment, start);
        pos_ = end + 2;
        if (strip_after) skip_space();
        continue;
      }
      if (pos_ + 2 < n && s_[pos_ + 2] == '-' && (next == '%' || next == '{')) {
        strip_trailing_text();
        push(next == '%' ? Tok::kOpenStatement : Tok::kOpenExpression, "", pos_);
        if (next == '{') curly_depth_ = 0;
        pos_ += 3;
        continue;
      }
    }
    skip_space();
    if (pos_ >= n) fail("unexpected end of template");
    char c = s_[pos_];
    if (c == '-' && pos_ + 2 < n && s_[pos_ + 2] == '}' &&
        (s_[pos_ + 1] == '%' || s_[pos_ + 1] == '}')) {
      push(s_[pos_ + 1] == '%' ? Tok::kCloseStatement : Tok::kCloseExpression, "", pos_);
      pos_ += 3;
      skip_space();
      continue;
    }
    if (c == '-' || c == '+') {
      if (last == Tok::kText || last == Tok::kEnd) fail(std::string("unexpected character ") + c);
      bool binary = last == Tok::kIdentifier || last == Tok::kNumber || last == Tok::kString ||
                    last == Tok::kCloseParen || last == Tok::kCloseSquare;
      if (!binary) {
        size_t start = pos_++;
        std::string num = consume_digits();
        if (!num.empty() && s_[pos_] == '.' && pos_ + 1 < n && is_digit(s_[pos_ + 1])) {
          ++pos_;
          num += "." + consume_digits();
        }
        push(num.empty() ? Tok::kUnary : Tok::kNumber, std::string(1, c) + num, start);
        continue;
      }
    }
    bool matched = false;
    for (const Rule& rule : kRules) {
      std::string_view seq(rule.seq);
      if (seq == "}}" && curly_depth_ > 0) continue;
      if (s_.compare(pos_, seq.size(), seq) != 0) continue;
      push(rule.type, std::string(seq), pos_);
      if (rule.type == Tok::kOpenExpression) curly_depth_ = 0;
      if (rule.type == Tok::kOpenCurly) ++curly_depth_;
      if (rule.type == Tok::kCloseCurly) --curly_depth_;
      pos_ += seq.size();
      matched = true;
      break;
    }
    if (matched) continue;
    if (c == '\'' || c == '"') {
      size_t start = pos_++;
      std::string str = consume_string(c);
      push(Tok::kString, std::move(str), start);
      continue;
    }
    if (is_digit(c)) {
      size_t start = pos_;
      std::string num = consume_digits();
      if (last != Tok::kDot && s_[pos_] == '.' && pos_ + 1 < n && is_digit(s_[pos_ + 1])) {
        ++pos_;
        num += "." + consume_digits();
      }
      push(Tok::kNumber, std::move(num), start);
      continue;
    }
    if (is_word(c)) {
      size_t start = pos_;
      while (pos_ < n && is_word(s_[pos_])) ++pos_;
      if (pos_ >= n) fail("unexpected end of template");
      push(Tok::kIdentifier, s_.substr(start, pos_ - start), start);
      continue;
    }
    fail(std::string("unexpected character '") + c + "'");
  }
  return std::move(tokens_);
}

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
      node->num = std::stod(t.value);
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
  return Parser(Lexer(preprocess(source)).run()).program();
}

}  // namespace weft::serve::jinja
