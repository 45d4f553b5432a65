// Safetensors files (https://huggingface.co/docs/safetensors): reading one file, reading a Hugging
// Face model directory (single or sharded), and writing both.
//
// Layout of one file: u64 little-endian N | N bytes of JSON header | data. The header maps each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the start
// of the data) and may hold "__metadata__", a string-to-string map.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/core/tensor.h"
#include "runtime/io/file_util.h"

namespace weft::io {

struct TensorInfo {
  DType dtype = DType::kF32;
  Shape shape;
};

// One mmap'd safetensors file. open() validates the whole header (length, JSON, no repeated
// name, dtypes, shapes against byte ranges, ranges inside the file) and that the tensors tile
// the data section exactly (no overlap, no unreferenced gap, no trailing bytes), so later calls
// only fail on names that are not there.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> open(const std::string& path);

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::vector<std::string> names() const;  // sorted
  [[nodiscard]] bool contains(const std::string& name) const;
  absl::StatusOr<TensorInfo> info(const std::string& name) const;
  // A zero-copy CPU view of the stored bytes in the stored dtype; it keeps the mapping alive.
  // (A tensor whose bytes are not aligned to its element size is copied instead.)
  absl::StatusOr<Tensor> get(const std::string& name) const;
  // A new f32 CPU tensor from F32, BF16 or F16 data (exact: every such value is an f32).
  absl::StatusOr<Tensor> get_f32(const std::string& name) const;
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The file's first bytes: the 8-byte length and the JSON header (with its padding).
  [[nodiscard]] std::string_view header_span() const;
  // The stored bytes of one tensor, for checksums.
  absl::StatusOr<std::string_view> data_span(const std::string& name) const;

 private:
  struct Entry {
    TensorInfo info;
    size_t begin = 0;  // byte range in the file (header included)
    size_t end = 0;
  };
  SafetensorsFile() = default;
  absl::StatusOr<const Entry*> find(const std::string& name) const;

  std::string path_;
  std::shared_ptr<MappedFile> mapping_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
  size_t header_bytes_ = 0;  // 8 + the header's length: where the data section starts
};

// The weights of a Hugging Face model directory: DIR/model.safetensors if present, else the shards
// named by DIR/model.safetensors.index.json ({"weight_map": {tensor name: shard file}}). Every
// tensor name is in exactly one shard, and the index must agree with the shards.
class WeightSource {
 public:
  static absl::StatusOr<WeightSource> open(const std::string& model_dir);

  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] std::vector<std::string> names() const;  // sorted, across all shards
  [[nodiscard]] bool contains(const std::string& name) const;
  absl::StatusOr<TensorInfo> info(const std::string& name) const;
  absl::StatusOr<Tensor> get(const std::string& name) const;
  absl::StatusOr<Tensor> get_f32(const std::string& name) const;
  // The shard files in the order of their names.
  [[nodiscard]] const std::vector<std::shared_ptr<SafetensorsFile>>& files() const {
    return files_;
  }

 private:
  absl::StatusOr<const SafetensorsFile*> file_of(const std::string& name) const;

  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> file_index_;  // tensor name -> index into files_
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes one safetensors file, tensors in the given order (copied to the host if needed), the
// header padded with spaces to a multiple of 8 bytes. Atomic: "<path>.tmp.<pid>", fsync, rename.
// Names must be unique and not "__metadata__".
absl::Status write_safetensors(const std::string& path, const NamedTensors& tensors,
                               const std::map<std::string, std::string>& metadata = {});

// Writes a Hugging Face model directory's weights (creating `dir` if needed): one
// model.safetensors when the data fits in `max_shard_bytes`, else model-0000x-of-0000y.safetensors
// (tensors packed in order, a shard closed when the next tensor would pass the limit; a single
// larger tensor gets a shard of its own) and model.safetensors.index.json with
// metadata.total_size and weight_map. Each file carries metadata {"format": "pt"}, which
// transformers expects. Removes the other form's stale top file (index or model.safetensors).
absl::Status write_sharded_safetensors(const std::string& dir, const NamedTensors& tensors,
                                       uint64_t max_shard_bytes);

}  // namespace weft::io
