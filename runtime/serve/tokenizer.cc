#include "runtime/serve/tokenizer.h"

#include <deque>
#include <filesystem>
#include <fstream>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "nlohmann/json.hpp"
#include "runtime/core/status.h"
#include "runtime/serve/tokenizer_added.h"
#include "runtime/serve/tokenizer_bpe.h"
#include "runtime/serve/tokenizer_pipeline.h"
#include "runtime/serve/tokenizer_sentencepiece.h"
#include "runtime/serve/unicode_text.h"

namespace weft::serve {

using nlohmann::json;

struct Tokenizer::Pipeline {
  std::unique_ptr<BpeModel> model;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  PostProcessor post_processor;
  Decoder decoder;
  AddedTokenMatcher raw_matcher;         // added tokens with normalized=false
  AddedTokenMatcher normalized_matcher;  // normalized=true: matched after the normalizer
  absl::flat_hash_map<int32_t, AddedToken> added_by_id;
  absl::flat_hash_map<std::string, int32_t> added_by_content;
  // HF decides "special" by a token's content, whichever id it is reached by.
  absl::flat_hash_set<std::string> special_contents;
};

namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::string text(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0);
  if (!in.read(text.data(), static_cast<std::streamsize>(text.size()))) {
    return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
  }
  return text;
}

absl::StatusOr<json> read_json(const fs::path& path) {
  WEFT_ASSIGN_OR_RETURN(std::string text, read_file(path));
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    return invalid_argument(path.string(), ": not valid JSON: ", e.what());
  }
}

// bos_token / eos_token: a string, {"content": ...}, or null.
std::string token_string(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

absl::StatusOr<std::unique_ptr<Tokenizer::Pipeline>> parse_pipeline(const json& root,
                                                                    BpeTables tables) {
  auto p = std::make_unique<Tokenizer::Pipeline>();
  if (!root.is_object() || !root.contains("model")) return invalid_argument("no \"model\" object");
  WEFT_ASSIGN_OR_RETURN(p->normalizer, Normalizer::from_json(root.value("normalizer", json())));
  WEFT_ASSIGN_OR_RETURN(p->pre_tokenizer,
                        PreTokenizer::from_json(root.value("pre_tokenizer", json())));
  WEFT_ASSIGN_OR_RETURN(p->post_processor,
                        PostProcessor::from_json(root.value("post_processor", json())));
  WEFT_ASSIGN_OR_RETURN(p->decoder, Decoder::from_json(root.value("decoder", json())));
  WEFT_ASSIGN_OR_RETURN(p->model, BpeModel::from_json(root["model"], std::move(tables),
                                                      p->pre_tokenizer.byte_level()));
  // HF's AddedVocabulary::add_tokens ignores the ids in the file: a token keeps the id its
  // content already has (an earlier added token, or the model's vocab), else takes the next id
  // after the vocab and the added tokens so far.
  int32_t max_added = -1;
  for (const json& t : root.value("added_tokens", json::array())) {
    AddedToken token;
    token.content = t.at("content").get<std::string>();
    if (token.content.empty()) continue;
    token.special = t.value("special", false);
    token.single_word = t.value("single_word", false);
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    token.normalized = t.value("normalized", !token.special);
    const int32_t vocab_count = p->model->vocab_count();
    if (auto it = p->added_by_content.find(token.content); it != p->added_by_content.end()) {
      token.id = it->second;
    } else if (std::optional<int32_t> id = p->model->token_to_id(token.content)) {
      token.id = *id;
    } else {
      token.id = max_added < 0                                  ? vocab_count
                 : max_added >= vocab_count || vocab_count == 0 ? max_added + 1
                                                                : vocab_count;
    }
    max_added = std::max(max_added, token.id);
    if (token.special) p->special_contents.insert(token.content);
    (token.normalized ? p->normalized_matcher : p->raw_matcher).add(token);
    p->added_by_content.insert_or_assign(token.content, token.id);
    p->added_by_id.insert_or_assign(token.id, std::move(token));
  }
  return p;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::load(const std::string& model_dir) {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  const fs::path dir(model_dir);
  const fs::path json_path = dir / "tokenizer.json";
  const fs::path sp_path = dir / "tokenizer.model";
  if (fs::exists(json_path)) {
    WEFT_ASSIGN_OR_RETURN(std::string text, read_file(json_path));
    BpeTables tables;
    absl::StatusOr<json> root = parse_tokenizer_json(text, tables);
    if (!root.ok()) return invalid_argument(json_path.string(), ": ", root.status().message());
    text = std::string();
    absl::StatusOr<std::unique_ptr<Pipeline>> pipeline;
    try {
      pipeline = parse_pipeline(*root, std::move(tables));
    } catch (const json::exception& e) {
      pipeline = invalid_argument(e.what());
    }
    if (!pipeline.ok()) {
      return invalid_argument(json_path.string(), ": ", pipeline.status().message());
    }
    tok->hf_ = *std::move(pipeline);
  } else if (fs::exists(sp_path)) {
    std::string error;
    tok->sp_ = SentencePieceModel::load(sp_path.string(), &error);
    if (!tok->sp_) {
      return invalid_argument(sp_path.string(), ": not a sentencepiece model: ", error);
    }
  } else {
    return absl::NotFoundError(
        absl::StrCat(model_dir, " has neither tokenizer.json nor ", "tokenizer.model"));
  }
  WEFT_RETURN_IF_ERROR(tok->read_config(model_dir));
  return tok;
}

absl::Status Tokenizer::read_config(const std::string& model_dir) {
  const fs::path dir(model_dir);
  const fs::path config_path = dir / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    WEFT_ASSIGN_OR_RETURN(json config, read_json(config_path));
    if (!config.is_object()) return invalid_argument(config_path.string(), ": not an object");
    bos_token_ = token_string(config, "bos_token");
    eos_token_ = token_string(config, "eos_token");
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
      sp_add_bos_ = config["add_bos_token"].get<bool>();
    }
    if (config.contains("add_eos_token") && config["add_eos_token"].is_boolean()) {
      sp_add_eos_ = config["add_eos_token"].get<bool>();
    }
    const json& tmpl = config.value("chat_template", json());
    if (tmpl.is_string()) {
      chat_template_ = tmpl.get<std::string>();
    } else if (tmpl.is_array()) {
      for (const json& named : tmpl) {
        if (named.is_object() && named.value("name", "") == "default" &&
            named.contains("template") && named["template"].is_string()) {
          chat_template_ = named["template"].get<std::string>();
        }
      }
    } else if (!tmpl.is_null()) {
      return invalid_argument(config_path.string(),
                              ": chat_template is neither a string nor a list of templates");
    }
  } else if (sp_) {
    if (sp_->bos_id() >= 0) bos_token_ = sp_->id_to_piece(sp_->bos_id());
    if (sp_->eos_id() >= 0) eos_token_ = sp_->id_to_piece(sp_->eos_id());
  }
  if (chat_template_.empty() && fs::exists(dir / "chat_template.jinja")) {
    WEFT_ASSIGN_OR_RETURN(chat_template_, read_file(dir / "chat_template.jinja"));
  }
  if (std::optional<int32_t> eos = token_to_id(eos_token_); eos && !eos_token_.empty()) {
    eos_token_ids_.push_back(*eos);
  }
  const fs::path generation_path = dir / "generation_config.json";
  if (fs::exists(generation_path)) {
    WEFT_ASSIGN_OR_RETURN(json generation, read_json(generation_path));
    const json ids = generation.is_object() ? generation.value("eos_token_id", json()) : json();
    for (const json& id : ids.is_array() ? ids : json::array({ids})) {
      if (!id.is_number_integer()) continue;
      const auto value = id.get<int32_t>();
      if (std::find(eos_token_ids_.begin(), eos_token_ids_.end(), value) == eos_token_ids_.end()) {
        eos_token_ids_.push_back(value);
      }
    }
  }
  return absl::OkStatus();
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!unicode::is_valid_utf8(text)) {
    repaired = unicode::to_valid_utf8(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  if (sp_) {
    const std::vector<int32_t> pieces = sp_->encode(text);
    if (add_special_tokens && sp_add_bos_ && sp_->bos_id() >= 0) ids.push_back(sp_->bos_id());
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    if (add_special_tokens && sp_add_eos_ && sp_->eos_id() >= 0) ids.push_back(sp_->eos_id());
    return ids;
  }
  const Pipeline& p = *hf_;
  std::vector<TextSegment> segments;
  std::vector<TextSegment> inner;
  std::vector<std::string_view> words;
  std::deque<std::string> arena;
  p.raw_matcher.split(text, segments);
  for (const TextSegment& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::string_view piece = text.substr(seg.begin, seg.end - seg.begin);
    if (!p.normalizer.empty()) piece = arena.emplace_back(p.normalizer.apply(piece));
    inner.clear();
    p.normalized_matcher.split(piece, inner);
    for (const TextSegment& sub : inner) {
      if (sub.id >= 0) {
        ids.push_back(sub.id);
        continue;
      }
      words.clear();
      p.pre_tokenizer.apply(piece.substr(sub.begin, sub.end - sub.begin),
                            seg.begin == 0 && sub.begin == 0, words, arena);
      for (std::string_view word : words) p.model->tokenize(word, ids);
    }
  }
  return add_special_tokens ? p.post_processor.apply(std::move(ids)) : ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  if (sp_) {
    // sentencepiece drops control tokens; HF's slow tokenizers print them unless skipped.
    std::string out;
    std::vector<int32_t> run;
    auto flush = [&] {
      out += sp_->decode(run);
      run.clear();
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= sp_->size()) continue;
      if (is_special(id)) {
        if (skip_special_tokens) continue;
        flush();
        out += sp_->id_to_piece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = nullptr;
    if (auto it = hf_->added_by_id.find(id); it != hf_->added_by_id.end()) {
      token = &it->second.content;
    } else {
      token = hf_->model->id_to_token(id);
    }
    if (token == nullptr) continue;
    if (skip_special_tokens && hf_->special_contents.contains(*token)) continue;
    tokens.push_back(*token);
  }
  return hf_->decoder.decode(std::move(tokens));
}

int Tokenizer::vocab_size() const {
  if (sp_) return sp_->size();
  int32_t max_id = hf_->model->max_id();
  for (const auto& [id, token] : hf_->added_by_id) max_id = std::max(max_id, id);
  return max_id + 1;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (sp_) {
    if (id < 0 || id >= sp_->size()) return std::nullopt;
    return sp_->id_to_piece(id);
  }
  if (auto it = hf_->added_by_id.find(id); it != hf_->added_by_id.end()) return it->second.content;
  if (const std::string* token = hf_->model->id_to_token(id)) return *token;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (sp_) {
    const int32_t id = sp_->piece_to_id(token);
    if (id < 0 || sp_->id_to_piece(id) != token) return std::nullopt;
    return id;
  }
  if (auto it = hf_->added_by_content.find(absl::string_view(token.data(), token.size()));
      it != hf_->added_by_content.end()) {
    return it->second;
  }
  return hf_->model->token_to_id(token);
}

bool Tokenizer::is_special(int32_t id) const {
  if (sp_) {
    return id >= 0 && id < sp_->size() && sp_->is_special(id);
  }
  const std::optional<std::string> token = id_to_token(id);
  return token && hf_->special_contents.contains(*token);
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}

std::pair<std::string, std::string> StreamDecoder::decode_window() const {
  const std::span<const int32_t> all(ids_);
  return {tok_.decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_),
          tok_.decode(all.subspan(prefix_offset_), skip_special_)};
}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const auto [prefix, full] = decode_window();
  // A trailing U+FFFD is (usually) a character whose bytes have not all arrived: hold it.
  if (full.size() <= prefix.size() || unicode::ends_with_replacement(full)) return "";
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return full.substr(prefix.size());
}

std::string StreamDecoder::finish() {
  const auto [prefix, full] = decode_window();
  prefix_offset_ = read_offset_ = ids_.size();
  return full.size() > prefix.size() ? full.substr(prefix.size()) : "";
}

}  // namespace weft::serve
