#include "runtime/serve/tokenizer_pipeline.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"
#include "runtime/serve/unicode_text.h"

namespace weft::serve {
namespace {

using nlohmann::json;

// Per-thread PCRE2 match state: the ovector and a JIT stack large enough for long lines.
struct MatchScratch {
  MatchScratch()
      : data(pcre2_match_data_create(32, nullptr)),
        stack(pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr)),
        context(pcre2_match_context_create(nullptr)) {
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
  pcre2_match_data* data;
  pcre2_jit_stack* stack;
  pcre2_match_context* context;
};

std::string type_of(const json& config) {
  return config.contains("type") && config["type"].is_string() ? config["type"].get<std::string>()
                                                               : "";
}

// GPT-2's word regex, which ByteLevel uses when use_regex is true.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// HF SplitDelimiterBehavior over a partition of `word` into (begin, end, is_match) parts.
struct Part {
  size_t begin, end;
  bool is_match;
};

void split_word(std::string_view word, const Regex& re, const std::string& behavior, bool invert,
                std::vector<std::string_view>& out) {
  std::vector<Part> parts;
  size_t prev = 0;
  re.for_each_match(word, [&](size_t begin, size_t end) {
    if (begin > prev) parts.push_back({prev, begin, invert});
    parts.push_back({begin, end, !invert});
    prev = end;
  });
  if (prev < word.size()) parts.push_back({prev, word.size(), invert});

  std::vector<Part> merged;  // is_match now means "drop"
  bool previous_match = false;
  if (behavior == "Removed") {
    merged = parts;
  } else if (behavior == "Isolated") {
    for (const Part& p : parts) merged.push_back({p.begin, p.end, false});
  } else if (behavior == "MergedWithPrevious" || behavior == "Contiguous") {
    const bool contiguous = behavior == "Contiguous";
    for (const Part& p : parts) {
      const bool join = contiguous ? p.is_match == previous_match : p.is_match && !previous_match;
      if (join && !merged.empty()) {
        merged.back().end = p.end;
      } else {
        merged.push_back({p.begin, p.end, false});
      }
      previous_match = p.is_match;
    }
  } else {  // MergedWithNext
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (it->is_match && !previous_match && !merged.empty()) {
        merged.back().begin = it->begin;
      } else {
        merged.push_back({it->begin, it->end, false});
      }
      previous_match = it->is_match;
    }
    std::reverse(merged.begin(), merged.end());
  }
  for (const Part& p : merged) {
    if (!p.is_match && p.end > p.begin) out.push_back(word.substr(p.begin, p.end - p.begin));
  }
}

std::string replace_literal(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos || from.empty()) break;
    out.append(s.substr(pos, hit - pos)).append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

std::string strip_whitespace(const std::string& s, bool left, bool right) {
  // Byte offsets of the first and one past the last non-whitespace character.
  size_t first = s.size(), last = 0;
  for (size_t pos = 0; pos < s.size();) {
    const size_t at = pos;
    if (!unicode::is_whitespace(unicode::next_code_point(s, pos))) {
      first = std::min(first, at);
      last = pos;
    }
  }
  if (first == s.size()) return left || right ? std::string() : s;
  const size_t begin = left ? first : 0;
  const size_t end = right ? last : s.size();
  return s.substr(begin, end - begin);
}

// Hugging Face matches with Oniguruma, whose \s is Unicode White_Space; PCRE2's also takes
// U+180E MONGOLIAN VOWEL SEPARATOR (in \h), so \s and \S are spelled out as White_Space.
constexpr char kWhiteSpace[] =
    R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F})"
    R"(\x{3000})";

std::string oniguruma_whitespace(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        out += in_class ? std::string(kWhiteSpace) : absl::StrCat("[", kWhiteSpace, "]");
      } else if (next == 'S' && !in_class) {
        out += absl::StrCat("[^", kWhiteSpace, "]");
      } else {
        out.push_back(c);
        out.push_back(next);
      }
      continue;
    }
    out.push_back(c);
    if (c == '[' && !in_class) {
      in_class = true;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
    } else if (c == ']' && in_class) {
      in_class = false;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Regex>> Regex::compile(const std::string& pattern,
                                                            bool literal) {
  std::shared_ptr<Regex> re(new Regex());
  int error = 0;
  PCRE2_SIZE offset = 0;
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  const std::string source = literal ? pattern : oniguruma_whitespace(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   options, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return invalid_argument("regex '", pattern, "' does not compile at offset ", offset, ": ",
                            reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT, pcre2_match interprets
  re->code_ = code;
  return std::shared_ptr<const Regex>(std::move(re));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::find(std::string_view s, size_t start, size_t& begin, size_t& end) const {
  thread_local MatchScratch scratch;
  // Subjects are valid UTF-8 (Tokenizer::encode repairs its input), so skip the O(n) check
  // that would otherwise run on every call.
  const int rc =
      pcre2_match(static_cast<const pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(s.data()),
                  s.size(), start, PCRE2_NO_UTF_CHECK, scratch.data, scratch.context);
  if (rc < 0) return false;
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
  begin = ovector[0];
  end = ovector[1];
  return true;
}

std::string Regex::replace_all(std::string_view s, std::string_view content) const {
  std::string out;
  size_t prev = 0;
  for_each_match(s, [&](size_t begin, size_t end) {
    out.append(s.substr(prev, begin - prev)).append(content);
    prev = end;
  });
  out.append(s.substr(prev));
  return out;
}

absl::StatusOr<std::shared_ptr<const Regex>> parse_pattern(const json& pattern) {
  if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
    return Regex::compile(pattern["String"].get<std::string>(), /*literal=*/true);
  }
  if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
    return Regex::compile(pattern["Regex"].get<std::string>(), /*literal=*/false);
  }
  return invalid_argument("pattern ", pattern.dump(), " is neither {\"String\"} nor {\"Regex\"}");
}

template <typename Stage>
absl::StatusOr<Stage> sequence_of(const json& members) {
  Stage out;
  for (const json& member : members) {
    WEFT_ASSIGN_OR_RETURN(Stage inner, Stage::from_json(member));
    out.steps_.insert(out.steps_.end(), inner.steps_.begin(), inner.steps_.end());
  }
  return out;
}

// ---- Normalizer ----

absl::StatusOr<Normalizer> Normalizer::from_json(const json& config) {
  Normalizer n;
  if (config.is_null()) return n;
  const std::string type = type_of(config);
  if (type == "Sequence")
    return sequence_of<Normalizer>(config.value("normalizers", json::array()));
  Step step;
  step.type = type;
  if (type == "Prepend") {
    step.content = config.value("prepend", "");
  } else if (type == "Replace") {
    WEFT_ASSIGN_OR_RETURN(step.pattern, parse_pattern(config.value("pattern", json())));
    step.content = config.value("content", "");
  } else if (type == "Strip") {
    step.left = config.value("strip_left", true);
    step.right = config.value("strip_right", true);
  } else if (type != "NFC" && type != "NFD" && type != "NFKC" && type != "NFKD" &&
             type != "Lowercase") {
    return invalid_argument("normalizer type '", type, "' is not supported");
  }
  n.steps_.push_back(std::move(step));
  return n;
}

std::string Normalizer::apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    if (step.type == "Prepend") {
      if (!s.empty()) s.insert(0, step.content);
    } else if (step.type == "Replace") {
      s = step.pattern->replace_all(s, step.content);
    } else if (step.type == "NFC") {
      s = unicode::normalize(s, unicode::NormalForm::kNfc);
    } else if (step.type == "NFD") {
      s = unicode::normalize(s, unicode::NormalForm::kNfd);
    } else if (step.type == "NFKC") {
      s = unicode::normalize(s, unicode::NormalForm::kNfkc);
    } else if (step.type == "NFKD") {
      s = unicode::normalize(s, unicode::NormalForm::kNfkd);
    } else if (step.type == "Lowercase") {
      s = unicode::to_lower(s);
    } else if (step.type == "Strip") {
      s = strip_whitespace(s, step.left, step.right);
    }
  }
  return s;
}

// ---- PreTokenizer ----

absl::StatusOr<PreTokenizer> PreTokenizer::from_json(const json& config) {
  PreTokenizer p;
  if (config.is_null()) return p;
  const std::string type = type_of(config);
  if (type == "Sequence") {
    return sequence_of<PreTokenizer>(config.value("pretokenizers", json::array()));
  }
  Step step;
  step.type = type;
  if (type == "Split") {
    WEFT_ASSIGN_OR_RETURN(step.pattern, parse_pattern(config.value("pattern", json())));
    step.behavior = config.value("behavior", "Isolated");
    step.invert = config.value("invert", false);
    static const char* kBehaviors[] = {"Removed", "Isolated", "MergedWithPrevious",
                                       "MergedWithNext", "Contiguous"};
    if (std::find(std::begin(kBehaviors), std::end(kBehaviors), step.behavior) ==
        std::end(kBehaviors)) {
      return invalid_argument("Split behavior '", step.behavior, "' is not supported");
    }
  } else if (type == "ByteLevel") {
    step.add_prefix_space = config.value("add_prefix_space", true);
    step.use_regex = config.value("use_regex", true);
    if (step.use_regex) {
      WEFT_ASSIGN_OR_RETURN(step.pattern, Regex::compile(kGpt2Pattern, false));
    }
    step.behavior = "Isolated";
  } else if (type == "Metaspace") {
    step.replacement = config.value("replacement", "\xE2\x96\x81");
    step.prepend_scheme = config.value("prepend_scheme", "");
    if (step.prepend_scheme.empty()) {
      step.prepend_scheme = config.value("add_prefix_space", true) ? "always" : "never";
    }
    step.split = config.value("split", true);
    WEFT_ASSIGN_OR_RETURN(step.pattern, Regex::compile(step.replacement, true));
    step.behavior = "MergedWithNext";
  } else if (type == "Digits") {
    const bool individual = config.value("individual_digits", false);
    // Rust char::is_numeric: general categories Nd, Nl and No.
    WEFT_ASSIGN_OR_RETURN(step.pattern, Regex::compile(individual ? "\\p{N}" : "\\p{N}+", false));
    step.behavior = "Isolated";
  } else if (type == "Whitespace") {
    WEFT_ASSIGN_OR_RETURN(step.pattern, Regex::compile(R"(\w+|[^\w\s]+)", false));
    step.behavior = "Removed";
    step.invert = true;
  } else if (type == "WhitespaceSplit") {
    WEFT_ASSIGN_OR_RETURN(step.pattern, Regex::compile(R"(\s+)", false));
    step.behavior = "Removed";
  } else {
    return invalid_argument("pre_tokenizer type '", type, "' is not supported");
  }
  p.steps_.push_back(std::move(step));
  return p;
}

bool PreTokenizer::byte_level() const {
  return std::any_of(steps_.begin(), steps_.end(),
                     [](const Step& s) { return s.type == "ByteLevel"; });
}

void PreTokenizer::apply(std::string_view text, bool at_text_start,
                         std::vector<std::string_view>& words,
                         std::deque<std::string>& arena) const {
  std::vector<std::string_view> current = {text};
  std::vector<std::string_view> next;
  for (const Step& step : steps_) {
    next.clear();
    for (size_t i = 0; i < current.size(); ++i) {
      std::string_view word = current[i];
      if (step.type == "ByteLevel") {
        // HF's NormalizedString::prepend does nothing to an empty string.
        if (step.add_prefix_space && !word.empty() && word[0] != ' ') {
          word = arena.emplace_back(" " + std::string(word));
        }
        if (!step.use_regex) {
          if (!word.empty()) next.push_back(word);
          continue;
        }
      } else if (step.type == "Metaspace") {
        std::string replaced = replace_literal(word, " ", step.replacement);
        const bool starts = replaced.compare(0, step.replacement.size(), step.replacement) == 0;
        if (!starts && !replaced.empty() &&
            (step.prepend_scheme == "always" ||
             (step.prepend_scheme == "first" && at_text_start && i == 0))) {
          replaced.insert(0, step.replacement);
        }
        word = arena.emplace_back(std::move(replaced));
        if (!step.split) {
          if (!word.empty()) next.push_back(word);
          continue;
        }
      }
      split_word(word, *step.pattern, step.behavior, step.invert, next);
    }
    std::swap(current, next);
  }
  for (std::string_view w : current) {
    if (!w.empty()) words.push_back(w);
  }
}

// ---- PostProcessor ----

absl::StatusOr<PostProcessor> PostProcessor::from_json(const json& config) {
  PostProcessor p;
  if (config.is_null()) return p;
  const std::string type = type_of(config);
  if (type == "Sequence") {
    for (const json& sub : config.value("processors", json::array())) {
      WEFT_ASSIGN_OR_RETURN(PostProcessor inner, from_json(sub));
      p.prefix_.insert(p.prefix_.begin(), inner.prefix_.begin(), inner.prefix_.end());
      p.suffix_.insert(p.suffix_.end(), inner.suffix_.begin(), inner.suffix_.end());
    }
  } else if (type == "TemplateProcessing") {
    const json& specials = config.value("special_tokens", json::object());
    bool seen_sequence = false;
    for (const json& item : config.value("single", json::array())) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      const std::string name =
          item.contains("SpecialToken") ? item["SpecialToken"].value("id", "") : std::string();
      if (!specials.contains(name) || !specials[name].contains("ids")) {
        return invalid_argument("post_processor: special token '", name,
                                "' of the template is not in special_tokens");
      }
      for (const json& id : specials[name]["ids"]) {
        (seen_sequence ? p.suffix_ : p.prefix_).push_back(id.get<int32_t>());
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    p.prefix_.push_back(config.at("cls").at(1).get<int32_t>());
    p.suffix_.push_back(config.at("sep").at(1).get<int32_t>());
  } else if (type != "ByteLevel") {
    return invalid_argument("post_processor type '", type, "' is not supported");
  }
  return p;
}

std::vector<int32_t> PostProcessor::apply(std::vector<int32_t> ids) const {
  ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

// ---- Decoder ----

absl::StatusOr<Decoder> Decoder::from_json(const json& config) {
  Decoder d;
  if (config.is_null()) return d;
  d.present_ = true;
  const std::string type = type_of(config);
  if (type == "Sequence") {
    WEFT_ASSIGN_OR_RETURN(d, sequence_of<Decoder>(config.value("decoders", json::array())));
    d.present_ = true;
    return d;
  }
  Step step;
  step.type = type;
  if (type == "Replace") {
    WEFT_ASSIGN_OR_RETURN(step.pattern, parse_pattern(config.value("pattern", json())));
    step.content = config.value("content", "");
  } else if (type == "Strip") {
    step.content = config.value("content", " ");
    step.start = config.value("start", 0);
    step.stop = config.value("stop", 0);
  } else if (type == "Metaspace") {
    step.replacement = config.value("replacement", "\xE2\x96\x81");
    const std::string scheme = config.value("prepend_scheme", "");
    step.prepend = scheme.empty() ? config.value("add_prefix_space", true) : scheme != "never";
  } else if (type != "ByteLevel" && type != "ByteFallback" && type != "Fuse") {
    return invalid_argument("decoder type '", type, "' is not supported");
  }
  d.steps_.push_back(std::move(step));
  return d;
}

namespace {

// "<0xAB>" -> 0xAB as Rust's u8::from_str_radix reads the two characters (a '+' sign allowed).
std::optional<uint8_t> byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = t[3] == '+' ? 0 : hex(t[3]);
  const int lo = hex(t[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string pending;
  auto flush = [&] {
    if (pending.empty()) return;
    if (unicode::is_valid_utf8(pending)) {
      out.push_back(pending);
    } else {
      for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
    }
    pending.clear();
  };
  for (std::string& t : tokens) {
    if (std::optional<uint8_t> b = byte_token(t)) {
      pending.push_back(static_cast<char>(*b));
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  return out;
}

std::string strip_token(const std::string& token, const std::string& content, int start, int stop) {
  std::vector<std::pair<size_t, size_t>> chars;  // (offset, length)
  for (size_t pos = 0; pos < token.size();) {
    const size_t at = pos;
    unicode::next_code_point(token, pos);
    chars.emplace_back(at, pos - at);
  }
  auto is_content = [&](size_t i) {
    return token.compare(chars[i].first, chars[i].second, content) == 0;
  };
  size_t first = 0;
  while (first < chars.size() && first < static_cast<size_t>(start) && is_content(first)) ++first;
  size_t last = chars.size();
  for (int i = 0; i < stop && last > first && is_content(last - 1); ++i) --last;
  if (first >= last) return "";
  const size_t begin = chars[first].first;
  const size_t end = chars[last - 1].first + chars[last - 1].second;
  return token.substr(begin, end - begin);
}

}  // namespace

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (!present_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out.append(i ? " " : "").append(tokens[i]);
    return out;
  }
  for (const Step& step : steps_) {
    if (step.type == "ByteLevel") {
      std::string bytes;
      for (const std::string& t : tokens) {
        std::string mapped;
        bool all = true;
        for (size_t pos = 0; pos < t.size() && all;) {
          const int b = unicode::char_to_byte(unicode::next_code_point(t, pos));
          all = b >= 0;
          mapped.push_back(static_cast<char>(b));
        }
        bytes.append(all ? mapped : t);
      }
      tokens = {unicode::to_valid_utf8(bytes)};
    } else if (step.type == "ByteFallback") {
      tokens = byte_fallback(std::move(tokens));
    } else if (step.type == "Fuse") {
      std::string fused;
      for (const std::string& t : tokens) fused.append(t);
      tokens = {std::move(fused)};
    } else if (step.type == "Replace") {
      for (std::string& t : tokens) t = step.pattern->replace_all(t, step.content);
    } else if (step.type == "Strip") {
      for (std::string& t : tokens) t = strip_token(t, step.content, step.start, step.stop);
    } else if (step.type == "Metaspace") {
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = replace_literal(tokens[i], step.replacement, i == 0 && step.prepend ? "" : " ");
      }
    }
  }
  std::string out;
  for (const std::string& t : tokens) out.append(t);
  return out;
}

}  // namespace weft::serve
