// The files of a Hugging Face model directory beside config.json and the weights, for export:
// the tokenizer's files and generation_config.json, so that an exported directory loads in
// transformers or vLLM as it is. And HF's size strings ("5GB") for --max-shard-size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weft::io {

// transformers' convert_file_size_to_int: "5GB" = 5 * 10^9 bytes, "500MB", "10KB" (10^3 units),
// "2GiB", "512MiB", "4KiB" (2^10 units; the unit in any case), or a plain number of bytes. A
// lower-case trailing "b" (as "5Gb") counts bits, an eighth of the bytes. Errors name the text.
absl::StatusOr<uint64_t> parse_size(const std::string& text);

// The files transformers' tokenizers and generate() read from a model directory.
inline constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",  "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model", "added_tokens.json",     "vocab.json",
    "merges.txt",      "chat_template.jinja",
};
inline constexpr char kGenerationConfig[] = "generation_config.json";

struct HfSideFiles {
  std::vector<std::string> copied;      // file names, in kTokenizerFiles order
  bool generation_from_config = false;  // generation_config.json written from config.json
};

// Copies into `to` those of kTokenizerFiles and generation_config.json that `source_dir` holds
// (none when it is empty or gone). Without a copied generation_config.json, writes one from
// `config_json`'s bos/eos/pad token ids as transformers' GenerationConfig.from_model_config does.
absl::StatusOr<HfSideFiles> write_hf_side_files(const std::string& to,
                                                const std::string& source_dir,
                                                const std::string& config_json);

}  // namespace weft::io
