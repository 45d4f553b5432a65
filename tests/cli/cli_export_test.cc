// `weft ckpt export` writes a directory that transformers and vLLM load as it is: config.json
// as trained (rope_scaling unchanged), safetensors split past --max-shard-size into
// model-0000i-of-0000N.safetensors with model.safetensors.index.json, which weft reads back to
// the same evaluation, and the tokenizer files and generation_config.json of the model
// directory the run started from (or a generation_config.json from config.json's token ids).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "runtime/io/file_util.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

// One training step of `model` (its own 2 x 20 tokens), saved under DIR/ckpt.
void train_one_step(const std::string& model, const std::string& dir) {
  const RunResult r =
      run_weft(absl::StrCat("train --model ", model, " --data ", model, "/tokens.txt --steps 1 ",
                            "--global-batch 2 --seq-len 20 --lr 1e-3 --save ", dir, "/ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

RunResult export_to(const std::string& dir, const std::string& to, const std::string& extra) {
  return run_weft(absl::StrCat("ckpt export --from ", dir, "/ckpt --to ", to, " ", extra));
}

json read_json(const std::string& path) { return json::parse(read_text(path)); }

// `weft eval` of `model` on `tokens`: the output file.
std::string eval(const std::string& model, const std::string& tokens, const std::string& out) {
  const RunResult r =
      run_weft(absl::StrCat("eval --model ", model, " --tokens ", tokens, " --out ", out));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

TEST(Export, ShardsCarryTheTokenizerAndGenerationFilesAndLoadBackAlike) {
  const std::string dir = make_temp_dir("weft_export");
  const std::string source = dir + "/source";
  fs::copy(model_fixture("rope_llama3"), source, fs::copy_options::recursive);
  // The source's side files; export copies their bytes, so any content serves.
  const std::map<std::string, std::string> side = {
      {"tokenizer.json", R"({"version": "1.0", "model": {"type": "BPE"}})"},
      {"tokenizer_config.json", R"({"bos_token": "<s>", "chat_template": "{{ messages }}"})"},
      {"special_tokens_map.json", R"({"eos_token": "</s>"})"},
      {"tokenizer.model", std::string("\x0a\x05piece\x00\xff", 9)},
      {"generation_config.json", R"({"eos_token_id": [2, 7], "temperature": 0.6})"}};
  for (const auto& [name, bytes] : side) {
    ASSERT_TRUE(io::write_file_atomic(source + "/" + name, bytes).ok());
  }
  train_one_step(source, dir);
  const RunResult inspect = run_weft(absl::StrCat("ckpt inspect --from ", dir, "/ckpt"));
  EXPECT_NE(inspect.out.find("source model " + fs::absolute(source).string()), std::string::npos)
      << inspect.out;

  const std::string whole = dir + "/whole", sharded = dir + "/sharded";
  RunResult r = export_to(dir, whole, "");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = export_to(dir, sharded, "--max-shard-size 10KB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(whole + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(sharded + "/model.safetensors"));

  // The index as transformers writes it: every tensor in one shard, the shards named
  // model-0000i-of-0000N, none past 10 KB of tensor data (each tensor here is smaller), and
  // metadata.total_size the sum of the tensors' bytes.
  const json index = read_json(sharded + "/model.safetensors.index.json");
  const auto all = io::SafetensorsFile::open(whole + "/model.safetensors").value();
  std::set<std::string> files;
  uint64_t total = 0;
  for (const std::string& name : all->names()) {
    ASSERT_TRUE(index["weight_map"].contains(name)) << name;
    files.insert(index["weight_map"][name].get<std::string>());
    total += all->get(name).value().nbytes();
  }
  EXPECT_EQ(index["weight_map"].size(), all->names().size());
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  ASSERT_GE(files.size(), 3u);
  const std::regex shard_name(R"(model-(\d{5})-of-(\d{5})\.safetensors)");
  int i = 0;
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(file, m, shard_name));
    EXPECT_EQ(std::stoi(m[1]), ++i);
    EXPECT_EQ(std::stoul(m[2]), files.size());
    const auto shard = io::SafetensorsFile::open(sharded + "/" + file).value();
    uint64_t bytes = 0;
    for (const std::string& name : shard->names()) bytes += shard->get(name).value().nbytes();
    EXPECT_LE(bytes, 10000u);
  }

  for (const std::string& out : {whole, sharded}) {
    SCOPED_TRACE(out);
    for (const auto& [name, bytes] : side) EXPECT_EQ(read_text(out + "/" + name), bytes) << name;
    EXPECT_EQ(read_json(out + "/config.json")["rope_scaling"],
              read_json(source + "/config.json")["rope_scaling"]);
  }
  const std::string tokens = source + "/tokens.txt";
  const std::string a = eval(whole, tokens, dir + "/whole.safetensors");
  const std::string b = eval(sharded, tokens, dir + "/sharded.safetensors");
  expect_same_tensors(b, a, 0.0);
  // One AdamW step at lr 1e-3 moved the weights: the export is the trained model, not the source.
  const std::string before = eval(source, tokens, dir + "/source.safetensors");
  EXPECT_NE(load_tensor(a, "loss").item(), load_tensor(before, "loss").item());
}

TEST(Export, WithoutSourceFilesWritesGenerationConfigFromConfigJson) {
  const std::string dir = make_temp_dir("weft_export_plain");
  train_one_step(model_fixture("rope_yarn"), dir);  // a fixture: no tokenizer, no generation file
  const RunResult r = export_to(dir, dir + "/hf", "");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("generation_config.json written from config.json's token ids"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(read_json(dir + "/hf/generation_config.json"),
            json({{"_from_model_config", true}, {"bos_token_id", 1}, {"eos_token_id", 2}}));
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"}) {
    EXPECT_FALSE(fs::exists(dir + "/hf/" + name)) << name;
  }
  EXPECT_EQ(read_json(dir + "/hf/config.json"),
            read_json(model_fixture("rope_yarn") + "/config.json"));
}

TEST(Export, RefusesAMaxShardSizeItCannotRead) {
  const std::string dir = make_temp_dir("weft_export_bad");
  train_one_step(model_fixture("rope_linear"), dir);
  const RunResult r = export_to(dir, dir + "/hf", "--max-shard-size 5XB");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--max-shard-size: size \"5XB\" is not a positive whole number"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir + "/hf/config.json"));
}

}  // namespace
}  // namespace weft::testing
