#include "runtime/train/checkpoint_reader.h"

#include <algorithm>
#include <filesystem>
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
    const io::TensorEntry& entry = reader->manifest_.tensors(i);
    WEFT_RETURN_IF_ERROR(check_chunks_fit(entry));
    reader->index_.emplace(entry.name(), i);
  }
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
  WEFT_ASSIGN_OR_RETURN(auto opened, io::SafetensorsFile::open((fs::path(path_) / name).string()));
  files_.emplace(name, opened);
  return opened;
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
  Tensor out = Tensor::zeros(Shape(lengths.begin(), lengths.end()));  // f32 [lengths]
  int64_t covered = 0;
  for (const io::TensorChunk& chunk : e->chunks()) {
    const Box have = chunk_box(chunk);
    const std::optional<Box> common = intersect(want, have);
    if (!common) continue;
    WEFT_ASSIGN_OR_RETURN(std::shared_ptr<io::SafetensorsFile> f, file(chunk.file()));
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

absl::StatusOr<std::string> find_latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory '", dir, "' does not exist"));
  }
  if (fs::exists(fs::path(dir) / kManifestFile)) return dir;
  const std::vector<std::string> all = complete_checkpoints(dir);
  if (all.empty()) {
    return absl::NotFoundError(absl::StrCat("no complete checkpoint in '", dir, "'"));
  }
  return all.back();
}

std::vector<std::string> complete_checkpoints(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    if (fs::exists(e.path() / kManifestFile)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());  // fixed-width step numbers sort as text
  std::vector<std::string> out;
  for (const std::string& name : names) out.push_back((fs::path(dir) / name).string());
  return out;
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

absl::Status verify_checkpoint(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(std::string dir, find_latest_checkpoint(path));
  WEFT_ASSIGN_OR_RETURN(io::CheckpointManifest manifest, read_manifest(dir));
  std::vector<std::string> problems;
  std::set<std::string> listed;
  for (const io::ShardFile& f : manifest.files()) {
    listed.insert(f.file());
    const std::string file = (fs::path(dir) / f.file()).string();
    std::error_code ec;
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
    if (!digest.ok() || *digest != f.sha256()) {
      problems.push_back(absl::StrCat(f.file(), ": checksum mismatch (corrupted)"));
    }
  }
  for (const io::TensorEntry& entry : manifest.tensors()) {
    if (absl::Status s = check_chunks_tile(entry); !s.ok()) {
      problems.push_back(std::string(s.message()));
    }
    for (const io::TensorChunk& chunk : entry.chunks()) {
      if (!listed.count(chunk.file())) {
        problems.push_back(
            absl::StrCat(entry.name(), ": chunk file ", chunk.file(), " not listed"));
      }
    }
  }
  if (problems.empty()) return absl::OkStatus();
  std::string message = absl::StrCat("checkpoint ", dir, " failed verification:");
  for (const std::string& p : problems) absl::StrAppend(&message, "\n  ", p);
  return absl::DataLossError(message);
}

}  // namespace weft::train
