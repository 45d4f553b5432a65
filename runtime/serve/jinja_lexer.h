// Tokens of a chat template, after @huggingface/jinja's preprocessing (drop one final
// newline, lstrip_blocks, trim_blocks, strip {% generation %} tags) and lexing (lexer.ts).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace weft::serve::jinja {

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

// Throws TemplateError naming the line on a lexical error (an unterminated string, a stray
// character, a template that ends inside a tag).
std::vector<Token> tokenize(std::string_view source);

}  // namespace weft::serve::jinja
