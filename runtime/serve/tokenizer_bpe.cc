#include "runtime/serve/tokenizer_bpe.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/core/status.h"
#include "runtime/serve/unicode_text.h"

namespace weft::serve {
namespace {

// The raw bytes a byte-level token stands for; nullopt if a character is outside GPT-2's table.
std::optional<std::string> byte_level_bytes(std::string_view token) {
  std::string bytes;
  size_t pos = 0;
  while (pos < token.size()) {
    const int b = unicode::char_to_byte(unicode::next_code_point(token, pos));
    if (b < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(b));
  }
  return bytes;
}

// One symbol of a word being merged: a doubly linked list over a vector.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

namespace {

// nlohmann's DOM builder for everything but model.vocab and model.merges, whose entries are
// moved straight into BpeTables.
class TokenizerJsonSax {
 public:
  using json = nlohmann::json;
  TokenizerJsonSax(json& root, BpeTables& tables) : dom_(root, true), tables_(tables) {}

  bool null() { return capture_ == kNone ? dom_.null() : bad_entry(); }
  bool boolean(bool v) { return capture_ == kNone ? dom_.boolean(v) : bad_entry(); }
  bool number_integer(json::number_integer_t v) {
    return capture_ == kNone ? dom_.number_integer(v) : vocab_entry(v);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    return capture_ == kNone ? dom_.number_unsigned(v)
                             : vocab_entry(static_cast<int64_t>(std::min<uint64_t>(v, INT64_MAX)));
  }
  bool number_float(json::number_float_t v, const std::string& s) {
    return capture_ == kNone ? dom_.number_float(v, s) : bad_entry();
  }
  bool string(std::string& v) {
    if (capture_ == kNone) return dom_.string(v);
    if (capture_ != kMerges) return bad_entry();
    if (depth_ == capture_depth_ + 1) {
      ++pair_size_;
    } else if (tables_.merges_are_pairs) {
      return bad_entry();
    }
    tables_.merges.push_back(std::move(v));
    return true;
  }
  bool binary(json::binary_t& v) { return capture_ == kNone ? dom_.binary(v) : bad_entry(); }
  bool start_object(std::size_t n) {
    ++depth_;
    if (capture_ == kPendingVocab) {
      capture_ = kVocab;
      capture_depth_ = depth_;
      tables_.has_vocab = true;
      return true;
    }
    return capture_ == kNone ? dom_.start_object(n) : bad_entry();
  }
  bool key(std::string& k) {
    if (capture_ == kVocab) {
      key_ = std::move(k);
      return true;
    }
    if (capture_ != kNone) return bad_entry();
    if (depth_ == 2 && top_key_ == "model" && (k == "vocab" || k == "merges")) {
      capture_ = k == "vocab" ? kPendingVocab : kPendingMerges;
      return true;
    }
    if (depth_ == 1) top_key_ = k;
    return dom_.key(k);
  }
  bool end_object() {
    --depth_;
    if (capture_ == kVocab && depth_ < capture_depth_) {
      capture_ = kNone;
      return true;
    }
    return capture_ == kNone ? dom_.end_object() : bad_entry();
  }
  bool start_array(std::size_t n) {
    ++depth_;
    if (capture_ == kPendingMerges) {
      capture_ = kMerges;
      capture_depth_ = depth_;
      tables_.has_merges = true;
      return true;
    }
    if (capture_ == kMerges && depth_ == capture_depth_ + 1 &&
        (tables_.merges_are_pairs || tables_.merges.empty())) {
      tables_.merges_are_pairs = true;
      pair_size_ = 0;
      return true;
    }
    return capture_ == kNone ? dom_.start_array(n) : bad_entry();
  }
  bool end_array() {
    --depth_;
    if (capture_ == kMerges) {
      if (depth_ < capture_depth_) {
        capture_ = kNone;
      } else if (pair_size_ != 2) {
        return bad_entry();
      }
      return true;
    }
    return capture_ == kNone ? dom_.end_array() : bad_entry();
  }
  bool parse_error(std::size_t position, const std::string& token,
                   const nlohmann::detail::exception& e) {
    return dom_.parse_error(position, token, e);
  }

 private:
  enum Capture { kNone, kPendingVocab, kVocab, kPendingMerges, kMerges };
  bool vocab_entry(int64_t id) {
    if (capture_ != kVocab) return bad_entry();
    tables_.vocab.emplace_back(std::move(key_), id);
    return true;
  }
  // Stops the parse: model.vocab must map strings to ids, model.merges list "a b" or [a, b].
  bool bad_entry() {
    tables_.error = capture_ == kVocab || capture_ == kPendingVocab
                        ? "model.vocab is not an object of token ids"
                        : "model.merges is not a list of \"a b\" strings or [a, b] pairs";
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  BpeTables& tables_;
  Capture capture_ = kNone;
  int depth_ = 0;
  int capture_depth_ = 0;
  int pair_size_ = 0;
  std::string top_key_;  // the current key of the root object
  std::string key_;
};

}  // namespace

absl::StatusOr<nlohmann::json> parse_tokenizer_json(const std::string& text, BpeTables& tables) {
  nlohmann::json root;
  TokenizerJsonSax sax(root, tables);
  try {
    const bool ok = nlohmann::json::sax_parse(text, &sax);
    if (!ok) return invalid_argument(tables.error.empty() ? "not valid JSON" : tables.error);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument("not valid JSON: ", e.what());
  }
  return root;
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::from_json(const nlohmann::json& model,
                                                              BpeTables tables, bool byte_level) {
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") return invalid_argument("model type '", type, "' is not supported (BPE only)");
  if (!tables.has_vocab) return invalid_argument("model.vocab is missing");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return invalid_argument("model.", key, " is not supported");
    }
  }
  bpe->byte_level_ = byte_level;
  bpe->byte_fallback_ = model.value("byte_fallback", false);
  bpe->fuse_unk_ = model.value("fuse_unk", false);
  bpe->ignore_merges_ = model.value("ignore_merges", false);
  bpe->vocab_.reserve(tables.vocab.size());
  for (auto& [token, id64] : tables.vocab) {
    if (id64 < 0 || id64 > INT32_MAX) {
      return invalid_argument("model.vocab['", token, "'] = ", id64, " is not a token id");
    }
    const auto id = static_cast<int32_t>(id64);
    if (static_cast<size_t>(id) >= bpe->id_to_token_.size()) bpe->id_to_token_.resize(id + 1);
    bpe->id_to_token_[id] = token;
    bpe->vocab_.insert_or_assign(std::move(token), id);
  }
  if (byte_level) {
    bpe->byte_vocab_.reserve(bpe->vocab_.size());
    for (const auto& [token, id] : bpe->vocab_) {
      if (std::optional<std::string> bytes = byte_level_bytes(token)) {
        bpe->byte_vocab_.insert_or_assign(*std::move(bytes), id);
      }
    }
  }
  for (int b = 0; b < 256; ++b) {
    auto it = bpe->vocab_.find(absl::StrFormat("<0x%02X>", b));
    bpe->byte_token_ids_[b] = it == bpe->vocab_.end() ? -1 : it->second;
    auto sym = bpe->byte_vocab_.find(std::string(1, static_cast<char>(b)));
    bpe->byte_symbol_ids_[b] = sym == bpe->byte_vocab_.end() ? -1 : sym->second;
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    auto it = bpe->vocab_.find(unk);
    if (it == bpe->vocab_.end())
      return invalid_argument("model.unk_token '", unk, "' is not in the vocab");
    bpe->unk_id_ = it->second;
  }
  const size_t per_merge = tables.merges_are_pairs ? 2 : 1;
  bpe->merges_.reserve(tables.merges.size() / per_merge);
  std::string merged;
  for (size_t i = 0; i * per_merge < tables.merges.size(); ++i) {
    std::string_view left, right;
    if (tables.merges_are_pairs) {
      left = tables.merges[2 * i];
      right = tables.merges[2 * i + 1];
    } else {
      const std::string_view line = tables.merges[i];
      const size_t space = line.find(' ');
      if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
        return invalid_argument("merges[", i, "] '", std::string(line),
                                "' is not two tokens split by a space");
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    }
    merged.assign(left).append(right);
    const std::optional<int32_t> a = bpe->token_to_id(left);
    const std::optional<int32_t> b = bpe->token_to_id(right);
    const std::optional<int32_t> ab = bpe->token_to_id(merged);
    if (!a || !b || !ab) {
      return invalid_argument("merges[", i, "] '", std::string(left), " ", std::string(right),
                              "' uses a token that is not in the vocab");
    }
    bpe->merges_.insert_or_assign(pair_key(*a, *b), Merge{static_cast<int32_t>(i), *ab});
  }
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(absl::string_view(token.data(), token.size()));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
  const std::string& token = id_to_token_[id];
  // An empty slot is an id the vocab skips (a vocab never holds the empty token).
  return token.empty() ? nullptr : &token;
}

std::optional<int32_t> BpeModel::symbol_id(std::string_view s) const {
  const auto& map = byte_level_ ? byte_vocab_ : vocab_;
  auto it = map.find(absl::string_view(s.data(), s.size()));
  if (it == map.end()) return std::nullopt;
  return it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (std::optional<int32_t> id = symbol_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(absl::string_view(word.data(), word.size()));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t begin = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) {
      cache_.try_emplace(std::string(word), out.begin() + static_cast<ptrdiff_t>(begin), out.end());
    }
  }
}

// HF's Word::merge_all: initial symbols are the word's characters (bytes for byte-level),
// unknown ones replaced by byte-fallback tokens or (fused) unk; then the lowest-ranked adjacent
// pair is merged, leftmost first, until no pair has a merge.
void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, true});
  };
  std::optional<int32_t> pending_unk;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t len =
        byte_level_ ? 1 : std::min<size_t>(unicode::utf8_length(word[pos]), word.size() - pos);
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    std::optional<int32_t> id;
    if (byte_level_) {
      const int32_t sym = byte_symbol_ids_[static_cast<unsigned char>(ch[0])];
      if (sym >= 0) id = sym;
    } else {
      id = symbol_id(ch);
    }
    if (id) {
      if (pending_unk) add(*std::exchange(pending_unk, std::nullopt));
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_token_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (char c : ch) add(byte_token_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) add(*pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk) add(*pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // a stale entry
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace weft::serve
