// Preprocessing and lexing of chat templates, following @huggingface/jinja's lexer.ts so that
// whitespace comes out identical.
#include "runtime/serve/jinja_lexer.h"

#include <algorithm>
#include <cstdlib>

#include "runtime/serve/jinja_value.h"

namespace weft::serve::jinja {
namespace {

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
      char32_t unit = static_cast<char32_t>(std::strtoul(hex.c_str(), nullptr, 16));
      pos_ += len;
      // JavaScript strings are UTF-16: "\ud83d\ude00" is one character; a lone half is U+FFFD.
      if (unit >= 0xd800 && unit < 0xdc00 && s_.compare(pos_, 2, "\\u") == 0) {
        char32_t low =
            static_cast<char32_t>(std::strtoul(s_.substr(pos_ + 2, 4).c_str(), nullptr, 16));
        if (low >= 0xdc00 && low < 0xe000) {
          unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
          pos_ += 6;
        }
      }
      out += encode_utf8({unit >= 0xd800 && unit < 0xe000 ? 0xfffd : unit});
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
          num += '.';
          num += consume_digits();
        }
        Tok type = num.empty() ? Tok::kUnary : Tok::kNumber;
        num.insert(num.begin(), c);
        push(type, std::move(num), start);
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
        num += '.';
        num += consume_digits();
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

}  // namespace

std::vector<Token> tokenize(std::string_view source) { return Lexer(preprocess(source)).run(); }

}  // namespace weft::serve::jinja
