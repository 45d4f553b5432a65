// Byte sizes written for people: "2GiB", "512MiB", "80GB", "1.5GiB", "1e9" (flags such as
// --kv-cache-memory and `weft plan --memory`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace weft {

// KiB/MiB/GiB (binary), KB/MB/GB (decimal), k/m/g (binary) or B after a positive number, any
// case; nullopt for anything else. (Hugging Face's --max-shard-size has its own rules:
// runtime/io/hf_model_files.h.)
std::optional<int64_t> parse_byte_size(const std::string& text);

}  // namespace weft
