// Reading safetensors files and model directories. Writing is in safetensors_write.cc.
#include "runtime/io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/core/status.h"

namespace weft::io {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; weft reads it in place");

namespace fs = std::filesystem;
using nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we, before parsing.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

absl::Status file_error(const std::string& path, auto&&... parts) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts...));
}

absl::StatusOr<uint64_t> non_negative_integer(const json& value, const std::string& path,
                                              const std::string& what) {
  if (!value.is_number_unsigned()) {
    return file_error(path, what, " must be a non-negative integer, got ", value.dump());
  }
  return value.get<uint64_t>();
}

std::string range_str(size_t begin, size_t end) { return absl::StrCat("[", begin, ", ", end, ")"); }

// DIR/model.safetensors.index.json -> {tensor name: shard file}, each shard present in DIR.
absl::StatusOr<std::map<std::string, std::string>> read_weight_map(const std::string& index_path,
                                                                   const std::string& model_dir) {
  std::error_code ec;
  std::map<std::string, std::string> weight_map;
  WEFT_ASSIGN_OR_RETURN(std::string text, read_file(index_path));
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    return file_error(index_path, "not valid JSON: ", e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return file_error(index_path, "needs an object \"weight_map\" {tensor name: shard file}");
  }
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      return file_error(index_path, "weight_map entry '", name, "' is not a file name");
    }
    const std::string shard = file.get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      return file_error(index_path, "weight_map entry '", name, "' names \"", shard,
                        "\", expected a file name inside ", model_dir);
    }
    if (!fs::exists(fs::path(model_dir) / shard, ec)) {
      return absl::NotFoundError(absl::StrCat(index_path, ": shard ", shard, " (holding '", name,
                                              "') is missing from ", model_dir));
    }
    weight_map[name] = shard;
  }
  return weight_map;
}

}  // namespace

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapping, MappedFile::map(path));
  const size_t file_bytes = mapping->size();
  if (file_bytes < 8) {
    return file_error(path, "file is ", file_bytes,
                      " bytes, too short for the 8-byte header length (truncated or not a "
                      "safetensors file)");
  }
  uint64_t header_bytes;
  std::memcpy(&header_bytes, mapping->data(), 8);
  if (header_bytes > file_bytes - 8) {
    return file_error(path, "header length ", header_bytes, " runs past the end of the file (",
                      file_bytes, " bytes; truncated or not a safetensors file)");
  }
  if (header_bytes > kMaxHeaderBytes) {
    return file_error(path, "header length ", header_bytes, " exceeds the limit of ",
                      kMaxHeaderBytes, " bytes");
  }
  json header;
  // JSON lets a key repeat (nlohmann keeps the last); the format does not: a repeated tensor
  // name would let one entry shadow another.
  std::set<std::string> keys;
  std::string repeated;
  auto note_key = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && repeated.empty() &&
        !keys.insert(parsed.get<std::string>()).second) {
      repeated = parsed.get<std::string>();
    }
    return true;
  };
  try {
    const char* text = mapping->data() + 8;
    header = json::parse(text, text + header_bytes, note_key);
  } catch (const json::exception& e) {
    return file_error(path, "header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) return file_error(path, "header is not a JSON object");
  if (!repeated.empty()) return file_error(path, "tensor '", repeated, "' is listed twice");

  auto file = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  const size_t data_start = 8 + header_bytes;
  const size_t data_bytes = file_bytes - data_start;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return file_error(path, "__metadata__ is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) {
          return file_error(path, "__metadata__ value of \"", key, "\" is not a string");
        }
        file->metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
        !value.contains("data_offsets")) {
      return file_error(path, where, " needs an object with dtype, shape and data_offsets, got ",
                        value.dump());
    }
    if (!value["dtype"].is_string()) return file_error(path, where, ": dtype is not a string");
    absl::StatusOr<DType> dtype = dtype_from_name(value["dtype"].get<std::string>());
    if (!dtype.ok()) return file_error(path, where, ": ", dtype.status().message());
    Entry entry;
    entry.info.dtype = *dtype;
    if (!value["shape"].is_array()) return file_error(path, where, ": shape is not an array");
    uint64_t expected_bytes = dtype_size(*dtype);
    for (const json& d : value["shape"]) {
      WEFT_ASSIGN_OR_RETURN(uint64_t dim, non_negative_integer(d, path, where + " shape entry"));
      if (dim > static_cast<uint64_t>(INT64_MAX) ||
          __builtin_mul_overflow(expected_bytes, dim, &expected_bytes)) {
        return file_error(path, where, ": shape ", value["shape"].dump(), " is too large");
      }
      entry.info.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) {
      return file_error(path, where, ": data_offsets must be [begin, end], got ", offsets.dump());
    }
    WEFT_ASSIGN_OR_RETURN(uint64_t begin, non_negative_integer(offsets[0], path, where + " begin"));
    WEFT_ASSIGN_OR_RETURN(uint64_t end, non_negative_integer(offsets[1], path, where + " end"));
    if (begin > end || end > data_bytes) {
      return file_error(path, where, " data_offsets ", offsets.dump(),
                        " are out of range: the data section holds ", data_bytes,
                        " bytes (truncated file?)");
    }
    if (end - begin != expected_bytes) {
      return file_error(path, where, " has shape ", shape_str(entry.info.shape), " of ",
                        std::string(dtype_name(*dtype)), " (", expected_bytes,
                        " bytes) but data_offsets ", offsets.dump(), " hold ", end - begin,
                        " bytes");
    }
    entry.begin = data_start + begin;
    entry.end = data_start + end;
    file->entries_.emplace(name, std::move(entry));
  }

  // The tensors tile the data section: no two share bytes (empty tensors own none), no byte
  // between them is unreferenced, and nothing follows the last one.
  std::vector<std::pair<const std::string*, const Entry*>> by_offset;
  for (const auto& [name, entry] : file->entries_) {
    if (entry.end > entry.begin) by_offset.emplace_back(&name, &entry);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  size_t covered_to = data_start;
  for (size_t i = 0; i < by_offset.size(); ++i) {
    const auto& [name, entry] = by_offset[i];
    if (i > 0 && entry->begin < covered_to) {
      const auto& [prev_name, prev] = by_offset[i - 1];
      return file_error(path, "tensors '", *prev_name, "' ",
                        range_str(prev->begin - data_start, prev->end - data_start), " and '",
                        *name, "' ", range_str(entry->begin - data_start, entry->end - data_start),
                        " overlap");
    }
    if (entry->begin > covered_to) {
      return file_error(path, "data bytes ",
                        range_str(covered_to - data_start, entry->begin - data_start),
                        " before tensor '", *name, "' belong to no tensor");
    }
    covered_to = entry->end;
  }
  if (covered_to != file_bytes) {
    return file_error(path, file_bytes - covered_to, " trailing bytes after the last tensor (",
                      "data section ends at ", covered_to - data_start, " of ", data_bytes, ")");
  }
  file->header_bytes_ = data_start;
  file->mapping_ = std::move(mapping);
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return entries_.count(name) > 0; }

absl::StatusOr<const SafetensorsFile::Entry*> SafetensorsFile::find(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  return &it->second;
}

absl::StatusOr<TensorInfo> SafetensorsFile::info(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const Entry* entry, find(name));
  return entry->info;
}

std::string_view SafetensorsFile::header_span() const { return {mapping_->data(), header_bytes_}; }

absl::StatusOr<std::string_view> SafetensorsFile::data_span(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const Entry* entry, find(name));
  return std::string_view(mapping_->data() + entry->begin, entry->end - entry->begin);
}

absl::StatusOr<Tensor> SafetensorsFile::get(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const Entry* entry, find(name));
  char* bytes = mapping_->data() + entry->begin;
  const DType dtype = entry->info.dtype;
  if (reinterpret_cast<uintptr_t>(bytes) % dtype_size(dtype) == 0) {
    return Tensor::borrow(bytes, entry->info.shape, dtype, Device::cpu(), mapping_);
  }
  Tensor copy = Tensor::empty(entry->info.shape, dtype, Device::cpu());
  std::memcpy(copy.raw(), bytes, entry->end - entry->begin);
  return copy;
}

absl::StatusOr<Tensor> SafetensorsFile::get_f32(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(Tensor stored, get(name));
  if (!is_floating(stored.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' in ", path_, " is ",
                                                   std::string(dtype_name(stored.dtype())),
                                                   ", expected F32, BF16 or F16"));
  }
  return stored.to_dtype(DType::kF32);
}

absl::StatusOr<WeightSource> WeightSource::open(const std::string& model_dir) {
  std::error_code ec;
  if (!fs::exists(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory ", model_dir, " does not exist"));
  }
  if (!fs::is_directory(model_dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, " is not a directory"));
  }
  WeightSource source;
  source.dir_ = model_dir;
  const std::string index_path = (fs::path(model_dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(model_dir) / "model.safetensors").string();

  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
  std::set<std::string> shard_names;
  if (fs::exists(single_path, ec)) {  // transformers, too, prefers it over an index
    shard_names.insert("model.safetensors");
  } else if (fs::exists(index_path, ec)) {
    WEFT_ASSIGN_OR_RETURN(weight_map, read_weight_map(index_path, model_dir));
    for (const auto& [name, shard] : weight_map) shard_names.insert(shard);
  } else {
    return absl::NotFoundError(
        absl::StrCat("no model.safetensors or model.safetensors.index.json in ", model_dir));
  }

  for (const std::string& shard : shard_names) {
    WEFT_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open((fs::path(model_dir) / shard).string()));
    for (const std::string& name : file->names()) {
      auto [it, inserted] = source.file_index_.emplace(name, source.files_.size());
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is in both ",
                                                       source.files_[it->second]->path(), " and ",
                                                       file->path()));
      }
    }
    source.files_.push_back(std::move(file));
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = source.file_index_.find(name);
    const std::string holder =
        it == source.file_index_.end()
            ? std::string()
            : fs::path(source.files_[it->second]->path()).filename().string();
    if (holder != shard) {
      return file_error(index_path, "weight_map puts '", name, "' in ", shard,
                        ", but that shard does not contain it");
    }
  }
  return source;
}

std::vector<std::string> WeightSource::names() const {
  std::vector<std::string> out;
  out.reserve(file_index_.size());
  for (const auto& [name, index] : file_index_) out.push_back(name);
  return out;
}

bool WeightSource::contains(const std::string& name) const { return file_index_.count(name) > 0; }

absl::StatusOr<const SafetensorsFile*> WeightSource::file_of(const std::string& name) const {
  auto it = file_index_.find(name);
  if (it == file_index_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", dir_));
  }
  return files_[it->second].get();
}

absl::StatusOr<TensorInfo> WeightSource::info(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const SafetensorsFile* file, file_of(name));
  return file->info(name);
}

absl::StatusOr<Tensor> WeightSource::get(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const SafetensorsFile* file, file_of(name));
  return file->get(name);
}

absl::StatusOr<Tensor> WeightSource::get_f32(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const SafetensorsFile* file, file_of(name));
  return file->get_f32(name);
}

}  // namespace weft::io
