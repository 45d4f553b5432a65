// Writing safetensors files and sharded Hugging Face model directories.
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/core/status.h"
#include "runtime/io/safetensors.h"

namespace weft::io {
namespace {

const std::map<std::string, std::string> kHfMetadata = {{"format", "pt"}};

// The JSON header, padded with spaces so that the data starts on an 8-byte boundary.
absl::StatusOr<std::string> build_header(const std::string& path, const NamedTensors& tensors,
                                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || !seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": tensor name '", name,
                                                     "' is reserved or repeated"));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write ", path, ": tensor '", name, "' is undefined"));
    }
    const uint64_t end = offset + tensor.nbytes();
    header[name] = {{"dtype", std::string(dtype_name(tensor.dtype()))},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

uint64_t total_bytes(const NamedTensors& tensors) {
  uint64_t total = 0;
  for (const auto& [name, tensor] : tensors) total += tensor.nbytes();
  return total;
}

absl::Status remove_if_present(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot remove ", path.string(), ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::Status write_safetensors(const std::string& path, const NamedTensors& tensors,
                               const std::map<std::string, std::string>& metadata) {
  WEFT_ASSIGN_OR_RETURN(std::string header, build_header(path, tensors, metadata));
  AtomicFileWriter writer(path);
  WEFT_RETURN_IF_ERROR(writer.open());
  const uint64_t header_bytes = header.size();
  WEFT_RETURN_IF_ERROR(writer.append(&header_bytes, 8));
  WEFT_RETURN_IF_ERROR(writer.append(header));
  for (const auto& [name, tensor] : tensors) {
    const Tensor host = tensor.host();
    WEFT_RETURN_IF_ERROR(writer.append(host.raw(), host.nbytes()));
  }
  return writer.commit();
}

absl::Status write_sharded_safetensors(const std::string& dir, const NamedTensors& tensors,
                                       uint64_t max_shard_bytes) {
  namespace fs = std::filesystem;
  if (max_shard_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", dir, ": max_shard_bytes is 0"));
  }
  WEFT_RETURN_IF_ERROR(build_header(dir, tensors, {}).status());  // names unique, all defined
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const fs::path root(dir);
  const uint64_t total = total_bytes(tensors);
  if (total <= max_shard_bytes) {
    WEFT_RETURN_IF_ERROR(
        write_safetensors((root / "model.safetensors").string(), tensors, kHfMetadata));
    return remove_if_present(root / "model.safetensors.index.json");
  }

  std::vector<NamedTensors> shards(1);
  uint64_t shard_bytes = 0;
  for (const auto& named : tensors) {
    const uint64_t bytes = named.second.nbytes();
    if (!shards.back().empty() && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(named);
    shard_bytes += bytes;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    WEFT_RETURN_IF_ERROR(write_safetensors((root / file).string(), shards[i], kHfMetadata));
    for (const auto& [name, tensor] : shards[i]) weight_map[name] = file;
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  WEFT_RETURN_IF_ERROR(
      write_file_atomic((root / "model.safetensors.index.json").string(), index.dump(2) + "\n"));
  return remove_if_present(root / "model.safetensors");
}

}  // namespace weft::io
