#include "runtime/train/checkpoint.h"

#include <chrono>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"
#include "runtime/io/safetensors.h"
#include "runtime/io/sha256.h"

namespace weft::train {
namespace fs = std::filesystem;
namespace {

constexpr char kManifest[] = "manifest.pb";
constexpr char kShardFile[] = "shard-00000.safetensors";

std::string step_dir_name(int64_t step) { return absl::StrFormat("step-%08d", step); }

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Row-major strides of `shape`.
std::vector<int64_t> strides_of(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * shape[i + 1];
  }
  return strides;
}

// Copies the chunk `src` (shape `lengths`) into `dst` (shape `global`) at `offsets`, one
// contiguous innermost row at a time.
void place_chunk(const float* src, const std::vector<int64_t>& lengths, float* dst,
                 const Shape& global, const std::vector<int64_t>& offsets) {
  const int nd = static_cast<int>(global.size());
  if (nd == 0) {
    dst[0] = src[0];
    return;
  }
  const std::vector<int64_t> gstride = strides_of(global);
  const int64_t row = lengths[nd - 1];
  const int64_t rows = shape_numel(lengths) / std::max<int64_t>(row, 1);
  std::vector<int64_t> index(nd, 0);  // position within the chunk, last dim fixed at 0
  for (int64_t r = 0; r < rows; ++r) {
    int64_t at = 0;
    for (int d = 0; d < nd; ++d) at += (offsets[d] + index[d]) * gstride[d];
    std::copy(src + r * row, src + (r + 1) * row, dst + at);
    for (int d = nd - 2; d >= 0; --d) {
      if (++index[d] < lengths[d]) break;
      index[d] = 0;
    }
  }
}

absl::Status check_chunk_fits(const io::TensorEntry& entry, const io::TensorChunk& chunk) {
  const int nd = entry.global_shape_size();
  if (chunk.offsets_size() != nd || chunk.lengths_size() != nd) {
    return absl::DataLossError(absl::StrCat("tensor '", entry.name(), "': a chunk has ",
                                            chunk.offsets_size(), " offsets for ", nd, " dims"));
  }
  for (int d = 0; d < nd; ++d) {
    if (chunk.offsets(d) < 0 || chunk.lengths(d) < 0 ||
        chunk.offsets(d) + chunk.lengths(d) > entry.global_shape(d)) {
      return absl::DataLossError(absl::StrCat("tensor '", entry.name(), "': chunk dim ", d,
                                              " [", chunk.offsets(d), ", +", chunk.lengths(d),
                                              ") exceeds ", entry.global_shape(d)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<io::CheckpointManifest> read_manifest(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(std::string bytes, io::read_file((fs::path(path) / kManifest).string()));
  io::CheckpointManifest manifest;
  if (!manifest.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat("checkpoint manifest ", path, "/", kManifest,
                                            " is corrupt (not a CheckpointManifest)"));
  }
  return manifest;
}

}  // namespace

bool is_optimizer_state(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() > suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".exp_avg") || ends_with(".exp_avg_sq");
}

CheckpointWriter::CheckpointWriter() = default;

CheckpointWriter::~CheckpointWriter() { (void)wait(); }

void CheckpointWriter::save_async(const std::string& dir, io::CheckpointManifest manifest,
                                  std::vector<CheckpointTensor> tensors) {
  (void)wait();  // the previous save's status was already returned or is superseded
  {
    std::lock_guard<std::mutex> lock(mutex_);
    snapshot_done_ = false;
    status_ = absl::OkStatus();
  }
  thread_ = std::thread(&CheckpointWriter::run, this, dir, std::move(manifest), std::move(tensors));
}

void CheckpointWriter::wait_snapshot() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return snapshot_done_; });
}

absl::Status CheckpointWriter::wait() {
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  return status_;
}

void CheckpointWriter::run(std::string dir, io::CheckpointManifest manifest,
                           std::vector<CheckpointTensor> tensors) {
  auto start = std::chrono::steady_clock::now();
  // Snapshot: host copies of everything, after which training may change the originals.
  std::vector<std::pair<std::string, Tensor>> host;
  host.reserve(tensors.size());
  for (CheckpointTensor& t : tensors) host.emplace_back(t.name, t.value.to(Device::cpu()));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    snapshot_done_ = true;
    snapshot_seconds_ = seconds_since(start);
  }
  cv_.notify_all();

  start = std::chrono::steady_clock::now();
  auto write = [&]() -> absl::Status {
    const fs::path final_dir = fs::path(dir) / step_dir_name(manifest.step());
    const fs::path tmp_dir = fs::path(dir) / (step_dir_name(manifest.step()) + ".tmp");
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    fs::create_directories(tmp_dir, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot create ", tmp_dir.string(), ": ", ec.message()));
    }
    const std::string shard = (tmp_dir / kShardFile).string();
    WEFT_RETURN_IF_ERROR(io::write_safetensors(shard, host));
    for (const CheckpointTensor& t : tensors) {
      io::TensorEntry* entry = manifest.add_tensors();
      entry->set_name(t.name);
      for (int64_t d : t.global_shape) entry->add_global_shape(d);
      entry->set_dtype(std::string(dtype_name(t.value.dtype())));
      io::TensorChunk* chunk = entry->add_chunks();
      chunk->set_file(kShardFile);
      for (size_t d = 0; d < t.global_shape.size(); ++d) {
        chunk->add_offsets(t.offsets.empty() ? 0 : t.offsets[d]);
        chunk->add_lengths(t.value.dim(static_cast<int>(d)));
      }
    }
    io::ShardFile* file = manifest.add_files();
    file->set_file(kShardFile);
    file->set_bytes(fs::file_size(shard, ec));
    WEFT_ASSIGN_OR_RETURN(std::string digest, io::sha256_file(shard));
    file->set_sha256(digest);
    WEFT_RETURN_IF_ERROR(
        io::write_file_atomic((tmp_dir / kManifest).string(), manifest.SerializeAsString()));
    // Replace an older checkpoint of the same step (a rerun) only once the new one is complete.
    if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);
    fs::rename(tmp_dir, final_dir, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot rename ", tmp_dir.string(), " to ",
                                              final_dir.string(), ": ", ec.message()));
    }
    return absl::OkStatus();
  };
  absl::Status status = write();
  std::lock_guard<std::mutex> lock(mutex_);
  status_ = status;
  write_seconds_ = seconds_since(start);
}

absl::Status save_checkpoint(const std::string& dir, io::CheckpointManifest manifest,
                             std::vector<CheckpointTensor> tensors) {
  CheckpointWriter writer;
  writer.save_async(dir, std::move(manifest), std::move(tensors));
  return writer.wait();
}

absl::StatusOr<std::string> find_latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory '", dir, "' does not exist"));
  }
  if (fs::exists(fs::path(dir) / kManifest)) return dir;
  std::string best;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    if (!fs::exists(e.path() / kManifest)) continue;
    if (name > best) best = name;  // fixed-width step numbers sort as text
  }
  if (best.empty()) {
    return absl::NotFoundError(absl::StrCat("no complete checkpoint in '", dir, "'"));
  }
  return (fs::path(dir) / best).string();
}

absl::StatusOr<LoadedCheckpoint> load_checkpoint(const std::string& path) {
  LoadedCheckpoint out;
  WEFT_ASSIGN_OR_RETURN(out.path, find_latest_checkpoint(path));
  WEFT_ASSIGN_OR_RETURN(out.manifest, read_manifest(out.path));
  std::map<std::string, std::shared_ptr<io::SafetensorsFile>> files;
  for (const io::TensorEntry& entry : out.manifest.tensors()) {
    Shape global(entry.global_shape().begin(), entry.global_shape().end());
    Tensor whole = Tensor::zeros(global);
    for (const io::TensorChunk& chunk : entry.chunks()) {
      WEFT_RETURN_IF_ERROR(check_chunk_fits(entry, chunk));
      auto it = files.find(chunk.file());
      if (it == files.end()) {
        WEFT_ASSIGN_OR_RETURN(auto file,
                              io::SafetensorsFile::open((fs::path(out.path) / chunk.file()).string()));
        it = files.emplace(chunk.file(), std::move(file)).first;
      }
      WEFT_ASSIGN_OR_RETURN(Tensor part, it->second->get_f32(entry.name()));
      std::vector<int64_t> lengths(chunk.lengths().begin(), chunk.lengths().end());
      if (part.shape() != lengths) {
        return absl::DataLossError(absl::StrCat("tensor '", entry.name(), "' in ", chunk.file(),
                                                " has shape ", shape_str(part.shape()),
                                                ", the manifest says ", shape_str(lengths)));
      }
      place_chunk(part.data<float>(), lengths, whole.data<float>(), global,
                  std::vector<int64_t>(chunk.offsets().begin(), chunk.offsets().end()));
    }
    out.tensors[entry.name()] = std::move(whole);
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
    int64_t covered = 0;
    for (const io::TensorChunk& chunk : entry.chunks()) {
      if (absl::Status s = check_chunk_fits(entry, chunk); !s.ok()) {
        problems.push_back(std::string(s.message()));
        continue;
      }
      if (!listed.count(chunk.file())) {
        problems.push_back(absl::StrCat(entry.name(), ": chunk file ", chunk.file(), " not listed"));
      }
      int64_t n = 1;
      for (int64_t l : chunk.lengths()) n *= l;
      covered += n;
    }
    Shape global(entry.global_shape().begin(), entry.global_shape().end());
    if (covered != shape_numel(global)) {
      problems.push_back(absl::StrCat(entry.name(), ": chunks cover ", covered, " of ",
                                      shape_numel(global), " elements"));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  std::string message = absl::StrCat("checkpoint ", dir, " failed verification:");
  for (const std::string& p : problems) absl::StrAppend(&message, "\n  ", p);
  return absl::DataLossError(message);
}

}  // namespace weft::train
