#include "runtime/train/checkpoint_reader.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/core/status.h"
#include "runtime/io/sha256.h"
#include "runtime/train/checkpoint_chunks.h"
#include "runtime/train/checkpoint_files.h"

namespace weft::train {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::open(const std::string& path) {
  std::unique_ptr<CheckpointReader> reader(new CheckpointReader());
  WEFT_ASSIGN_OR_RETURN(reader->path_, find_latest_checkpoint(path));
  WEFT_ASSIGN_OR_RETURN(reader->manifest_, read_manifest(reader->path_));
  for (int i = 0; i < reader->manifest_.tensors_size(); ++i) {
    reader->index_.emplace(reader->manifest_.tensors(i).name(), i);
  }
  for (const io::ShardFile& f : reader->manifest_.files()) reader->file_records_[f.file()] = f;
  return reader;
}

absl::StatusOr<const io::TensorEntry*> CheckpointReader::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", path_, " has no tensor '", name, "'"));
  }
  return &manifest_.tensors(it->second);
}

absl::StatusOr<Shape> CheckpointReader::global_shape(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const io::TensorEntry* e, entry(name));
  return Shape(e->global_shape().begin(), e->global_shape().end());
}

absl::StatusOr<std::shared_ptr<io::SafetensorsFile>> CheckpointReader::file(
    const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = files_.find(name);
  if (it != files_.end()) return it->second;
  const io::ShardFile& record = file_records_.at(name);  // read_manifest: every chunk's file
  const std::string file_path = (fs::path(path_) / name).string();
  auto damaged = [&](auto&&... why) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", path_, ": shard ", name, " is damaged: ", why...));
  };
  std::error_code ec;
  const uint64_t size = fs::file_size(file_path, ec);
  if (ec) return damaged("cannot read it (", ec.message(), ")");
  if (size != record.bytes()) {
    return damaged(size, " bytes, the manifest recorded ", record.bytes(), " (truncated?)");
  }
  absl::StatusOr<std::shared_ptr<io::SafetensorsFile>> opened =
      io::SafetensorsFile::open(file_path);
  if (!opened.ok()) return damaged(opened.status().message());
  if (!record.header_sha256().empty()) {
    if (io::sha256_hex((*opened)->header_span()) != record.header_sha256()) {
      return damaged("its header does not match the SHA-256 the manifest recorded");
    }
  } else {
    // Format 2 recorded the whole file's checksum only: check it on this first read.
    WEFT_ASSIGN_OR_RETURN(std::string digest, io::sha256_file(file_path));
    if (digest != record.sha256()) {
      return damaged("its bytes do not match the SHA-256 the manifest recorded");
    }
  }
  files_.emplace(name, *opened);
  return *opened;
}

absl::Status CheckpointReader::check_chunk(const io::SafetensorsFile& file,
                                           const std::string& tensor,
                                           const io::TensorChunk& chunk) const {
  if (chunk.sha256().empty()) return absl::OkStatus();  // format 2: the whole file was checked
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (checked_.count({chunk.file(), tensor})) return absl::OkStatus();
  }
  WEFT_ASSIGN_OR_RETURN(std::string_view bytes, file.data_span(tensor));
  if (io::sha256_hex(bytes) != chunk.sha256()) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path_, ": tensor '", tensor, "' in ",
                                            chunk.file(),
                                            " is damaged: its bytes do not match the SHA-256 the "
                                            "manifest recorded"));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  checked_.insert({chunk.file(), tensor});
  return absl::OkStatus();
}

absl::StatusOr<Tensor> CheckpointReader::read_slice(const std::string& name,
                                                    const std::vector<int64_t>& offsets,
                                                    const std::vector<int64_t>& lengths) const {
  WEFT_ASSIGN_OR_RETURN(const io::TensorEntry* e, entry(name));
  const Box want{offsets, lengths};
  const Box whole = whole_box(*e);
  bool inside = offsets.size() == whole.lengths.size() && lengths.size() == offsets.size();
  for (size_t d = 0; inside && d < offsets.size(); ++d) {
    inside = offsets[d] >= 0 && lengths[d] >= 0 && offsets[d] + lengths[d] <= whole.lengths[d];
  }
  if (!inside) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint tensor '", name, "' of shape [", absl::StrJoin(whole.lengths, ","),
                     "] has no box at offsets [", absl::StrJoin(offsets, ","), "] lengths [",
                     absl::StrJoin(lengths, ","), "]"));
  }
  Tensor out = Tensor::zeros(Shape(lengths.begin(), lengths.end()), DType::kF32,
                             Device::cpu());  // f32 [lengths]
  int64_t covered = 0;
  for (const io::TensorChunk& chunk : e->chunks()) {
    const Box have = chunk_box(chunk);
    const std::optional<Box> common = intersect(want, have);
    if (!common) continue;
    WEFT_ASSIGN_OR_RETURN(std::shared_ptr<io::SafetensorsFile> f, file(chunk.file()));
    WEFT_RETURN_IF_ERROR(check_chunk(*f, name, chunk));
    WEFT_ASSIGN_OR_RETURN(io::TensorInfo info, f->info(name));
    // F32 chunks are read in place from the mapping; others are converted whole.
    WEFT_ASSIGN_OR_RETURN(Tensor part, info.dtype == DType::kF32 ? f->get(name) : f->get_f32(name));
    if (part.shape() != have.lengths) {
      return absl::DataLossError(absl::StrCat("tensor '", name, "' in ", f->path(), " has shape ",
                                              shape_str(part.shape()), ", the manifest says ",
                                              shape_str(have.lengths)));
    }
    copy_region(part.data<float>(), have, out.data<float>(), want, *common);
    covered += box_volume(*common);
  }
  if (covered != box_volume(want)) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", path_, ": tensor '", name, "' box at offsets [",
                     absl::StrJoin(offsets, ","), "] lengths [", absl::StrJoin(lengths, ","),
                     "] is covered for ", covered, " of ", box_volume(want), " elements"));
  }
  return out;
}

absl::StatusOr<Tensor> CheckpointReader::read(const std::string& name) const {
  WEFT_ASSIGN_OR_RETURN(const io::TensorEntry* e, entry(name));
  const Box whole = whole_box(*e);
  return read_slice(name, whole.offsets, whole.lengths);
}

absl::StatusOr<Tensor> CheckpointReader::read_shard(const std::string& name,
                                                    const Shape& global_shape, int split_dim,
                                                    int64_t offset, int64_t length) const {
  WEFT_ASSIGN_OR_RETURN(Shape stored, this->global_shape(name));
  if (stored != global_shape) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", path_, ": tensor '", name, "' has shape ", shape_str(stored),
                     ", the model expects ", shape_str(global_shape)));
  }
  std::vector<int64_t> offsets(stored.size(), 0);
  std::vector<int64_t> lengths(stored.begin(), stored.end());
  if (split_dim >= 0) {
    offsets[split_dim] = offset;
    lengths[split_dim] = length;
  }
  return read_slice(name, offsets, lengths);
}

namespace {

bool is_step_name(const std::string& name) {
  return name.rfind("step-", 0) == 0 && name.find(".tmp") == std::string::npos;
}

bool has_manifest(const std::string& dir) {
  std::error_code ec;
  return fs::exists(fs::path(dir) / kManifestFile, ec);
}

// Directories directly in `dir` whose names `keep` accepts, sorted (fixed-width step numbers
// sort as text).
std::vector<std::string> subdirectories(const std::string& dir,
                                        const std::function<bool(const std::string&)>& keep) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory(ec) && keep(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> out;
  for (const std::string& name : names) out.push_back((fs::path(dir) / name).string());
  return out;
}

std::vector<std::string> step_directories(const std::string& dir) {
  return subdirectories(dir, is_step_name);
}

// A directory path without a trailing separator ("ckpt/step-00000040/" -> "ckpt/step-00000040").
fs::path normal(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

// Names the newest complete checkpoint older than the damaged one, if any.
std::string older_complete(const std::string& damaged) {
  const fs::path d = normal(damaged);
  const std::vector<std::string> complete =
      complete_checkpoints(d.has_parent_path() ? d.parent_path().string() : ".");
  for (auto it = complete.rbegin(); it != complete.rend(); ++it) {
    if (fs::path(*it).filename() < d.filename()) {
      return absl::StrCat(" (the newest complete checkpoint before it is ", *it, ")");
    }
  }
  return " (no complete checkpoint precedes it)";
}

absl::Status missing_manifest(const std::string& dir) {
  return absl::DataLossError(absl::StrCat("checkpoint ", dir, " has no ", kManifestFile,
                                          ": it is damaged (the manifest was deleted or never "
                                          "written)",
                                          older_complete(dir)));
}

}  // namespace

absl::StatusOr<std::string> find_latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory '", dir, "' does not exist"));
  }
  if (has_manifest(dir)) return dir;
  if (is_step_name(normal(dir).filename().string())) return missing_manifest(dir);
  const std::vector<std::string> all = step_directories(dir);
  if (all.empty()) return absl::NotFoundError(absl::StrCat("no checkpoint in '", dir, "'"));
  if (!has_manifest(all.back())) return missing_manifest(all.back());
  return all.back();
}

std::vector<std::string> checkpoint_candidates(const std::string& path) {
  if (has_manifest(path) || is_step_name(normal(path).filename().string())) {
    return {path};
  }
  std::vector<std::string> all = step_directories(path);
  std::reverse(all.begin(), all.end());
  return all;
}

std::vector<std::string> complete_checkpoints(const std::string& dir) {
  std::vector<std::string> out;
  for (const std::string& d : step_directories(dir)) {
    if (has_manifest(d)) out.push_back(d);
  }
  return out;
}

std::vector<std::string> leftover_checkpoints(const std::string& dir) {
  return subdirectories(dir, [](const std::string& name) {
    return name.rfind("step-", 0) == 0 && name.size() > 4 &&
           name.compare(name.size() - 4, 4, ".tmp") == 0;
  });
}

absl::StatusOr<std::vector<std::string>> remove_leftover_checkpoints(const std::string& dir) {
  std::vector<std::string> removed;
  for (const std::string& d : leftover_checkpoints(dir)) {
    std::error_code ec;
    fs::remove_all(d, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot remove the leftover of an interrupted save '",
                                              d, "': ", ec.message()));
    }
    removed.push_back(d);
  }
  return removed;
}

absl::Status prune_checkpoints(const std::string& dir, int64_t keep) {
  WEFT_CHECK(keep >= 1) << keep;
  const std::vector<std::string> all = complete_checkpoints(dir);
  for (size_t i = 0; i + keep < all.size(); ++i) {
    std::error_code ec;
    fs::remove_all(all[i], ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("--keep-last: cannot remove '", all[i], "': ", ec.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedCheckpoint> load_checkpoint(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, CheckpointReader::open(path));
  LoadedCheckpoint out;
  out.path = reader->path();
  out.manifest = reader->manifest();
  for (const io::TensorEntry& e : out.manifest.tensors()) {
    WEFT_ASSIGN_OR_RETURN(out.tensors[e.name()], reader->read(e.name()));
  }
  return out;
}

absl::StatusOr<VerifyReport> verify_checkpoint(const std::string& path) {
  VerifyReport report;
  std::vector<std::string> problems;
  std::error_code ec;
  if (fs::is_directory(path, ec) && !has_manifest(path)) {
    report.leftovers = leftover_checkpoints(path);
    for (const std::string& d : step_directories(path)) {
      if (!has_manifest(d)) {
        problems.push_back(absl::StrCat(fs::path(d).filename().string(), ": no ", kManifestFile,
                                        " (damaged: deleted or never written)"));
      }
    }
  }
  const std::vector<std::string> complete =
      has_manifest(path) ? std::vector<std::string>{path} : complete_checkpoints(path);
  if (complete.empty()) {
    WEFT_RETURN_IF_ERROR(find_latest_checkpoint(path).status());  // names what is missing
  }
  report.checkpoint = complete.empty() ? path : complete.back();
  const std::string& dir = report.checkpoint;
  absl::StatusOr<io::CheckpointManifest> manifest = read_manifest(dir);
  if (!manifest.ok()) {
    problems.push_back(std::string(manifest.status().message()));
  } else {
    for (const io::ShardFile& f : manifest->files()) {
      const std::string file = (fs::path(dir) / f.file()).string();
      const uint64_t size = fs::file_size(file, ec);
      if (ec) {
        problems.push_back(absl::StrCat(f.file(), ": missing"));
        continue;
      }
      if (size != f.bytes()) {
        problems.push_back(absl::StrCat(f.file(), ": ", size, " bytes, expected ", f.bytes()));
        continue;
      }
      absl::StatusOr<std::string> digest = io::sha256_file(file);
      if (digest.ok() && *digest == f.sha256()) continue;
      problems.push_back(absl::StrCat(f.file(), ": checksum mismatch (corrupted)"));
      // Name what is damaged: the header, or the tensors whose own checksums fail.
      absl::StatusOr<std::shared_ptr<io::SafetensorsFile>> opened = io::SafetensorsFile::open(file);
      if (!opened.ok()) {
        problems.push_back(absl::StrCat(f.file(), ": ", opened.status().message()));
        continue;
      }
      if (!f.header_sha256().empty() &&
          io::sha256_hex((*opened)->header_span()) != f.header_sha256()) {
        problems.push_back(absl::StrCat(f.file(), ": header damaged"));
      }
      for (const io::TensorEntry& entry : manifest->tensors()) {
        for (const io::TensorChunk& chunk : entry.chunks()) {
          if (chunk.file() != f.file() || chunk.sha256().empty()) continue;
          absl::StatusOr<std::string_view> bytes = (*opened)->data_span(entry.name());
          if (!bytes.ok() || io::sha256_hex(*bytes) != chunk.sha256()) {
            problems.push_back(absl::StrCat(f.file(), ": tensor '", entry.name(), "' damaged"));
          }
        }
      }
    }
  }
  if (problems.empty()) return report;
  std::string message = absl::StrCat("checkpoint ", path, " failed verification:");
  for (const std::string& p : problems) absl::StrAppend(&message, "\n  ", p);
  return absl::DataLossError(message);
}

}  // namespace weft::train
