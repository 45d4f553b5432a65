#include "runtime/train/checkpoint_files.h"

#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"
#include "runtime/io/safetensors.h"
#include "runtime/io/sha256.h"
#include "runtime/train/checkpoint_chunks.h"

namespace weft::train {
namespace fs = std::filesystem;
namespace {

absl::Status check_tensor(const CheckpointTensor& t) {
  const size_t nd = t.global_shape.size();
  const bool fits =
      t.value.ndim() == static_cast<int>(nd) && (t.offsets.empty() || t.offsets.size() == nd);
  for (size_t d = 0; fits && d < nd; ++d) {
    const int64_t at = t.offsets.empty() ? 0 : t.offsets[d];
    if (at < 0 || at + t.value.dim(static_cast<int>(d)) > t.global_shape[d]) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint tensor '", t.name, "': dim ", d, " [", at, ", +",
                       t.value.dim(static_cast<int>(d)), ") exceeds ", t.global_shape[d]));
    }
  }
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint tensor '", t.name, "': shape ", shape_str(t.value.shape()), " with ",
        t.offsets.size(), " offsets does not match global shape ", shape_str(t.global_shape)));
  }
  if (t.split_dim >= static_cast<int>(nd) || (t.split_dim >= 0) == t.group.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint tensor '", t.name, "': split_dim ",
                                                   t.split_dim, " with group '", t.group,
                                                   "' (a split needs both, in range)"));
  }
  return absl::OkStatus();
}

bool same_layout(const io::TensorEntry& a, const io::TensorEntry& b) {
  return std::equal(a.global_shape().begin(), a.global_shape().end(), b.global_shape().begin(),
                    b.global_shape().end()) &&
         a.split_dim() == b.split_dim() && a.group() == b.group() && a.dtype() == b.dtype();
}

}  // namespace

io::MeshRecord mesh_record(const parallel::ParallelDims& dims) {
  io::MeshRecord mesh;
  mesh.set_dp(dims.dp);
  mesh.set_pp(dims.pp);
  mesh.set_tp(dims.tp);
  mesh.set_sp(dims.sp);
  mesh.set_ep(dims.ep);
  mesh.set_etp(dims.etp);
  return mesh;
}

std::string step_dir_name(int64_t step) { return absl::StrFormat("step-%08d", step); }

std::string shard_file_name(int rank) { return absl::StrFormat("shard-%05d.safetensors", rank); }

bool is_optimizer_state(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() > suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".exp_avg") || ends_with(".exp_avg_sq");
}

absl::Status prepare_tmp_dir(const std::string& tmp_dir) {
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  if (!ec) fs::create_directories(tmp_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp_dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<io::CheckpointManifest> write_shard(const std::string& dir, int rank,
                                                   const std::vector<CheckpointTensor>& tensors) {
  io::CheckpointManifest part;
  if (tensors.empty()) return part;
  io::NamedTensors named;
  std::set<std::string> names;
  const std::string file_name = shard_file_name(rank);
  for (const CheckpointTensor& t : tensors) {
    WEFT_RETURN_IF_ERROR(check_tensor(t));
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint tensor '", t.name, "' is given twice by rank ", rank));
    }
    named.emplace_back(t.name, t.value);
    io::TensorEntry* entry = part.add_tensors();
    entry->set_name(t.name);
    for (int64_t d : t.global_shape) entry->add_global_shape(d);
    entry->set_dtype(std::string(dtype_name(t.value.dtype())));
    entry->set_split_dim(t.split_dim);
    entry->set_group(t.group);
    io::TensorChunk* chunk = entry->add_chunks();
    chunk->set_file(file_name);
    for (size_t d = 0; d < t.global_shape.size(); ++d) {
      chunk->add_offsets(t.offsets.empty() ? 0 : t.offsets[d]);
      chunk->add_lengths(t.value.dim(static_cast<int>(d)));
    }
  }
  const std::string path = (fs::path(dir) / file_name).string();
  WEFT_RETURN_IF_ERROR(io::write_safetensors(path, named));
  // One pass over the written file: the header, then every tensor's bytes in file order (they
  // tile the rest of the file), each into its own checksum and into the whole file's.
  WEFT_ASSIGN_OR_RETURN(std::shared_ptr<io::SafetensorsFile> written,
                        io::SafetensorsFile::open(path));
  io::Sha256 whole;
  whole.update(written->header_span());
  io::ShardFile* file = part.add_files();
  file->set_file(file_name);
  file->set_rank(rank);
  file->set_header_sha256(io::sha256_hex(written->header_span()));
  uint64_t bytes = written->header_span().size();
  for (int i = 0; i < part.tensors_size(); ++i) {
    io::TensorEntry* entry = part.mutable_tensors(i);
    WEFT_ASSIGN_OR_RETURN(std::string_view data, written->data_span(entry->name()));
    whole.update(data);
    bytes += data.size();
    entry->mutable_chunks(0)->set_sha256(io::sha256_hex(data));
  }
  file->set_bytes(bytes);
  file->set_sha256(whole.hex_digest());
  return part;
}

absl::StatusOr<io::CheckpointManifest> merge_parts(
    io::CheckpointManifest header, const std::vector<io::CheckpointManifest>& parts) {
  header.clear_tensors();
  header.clear_files();
  std::map<std::string, int> index;  // name -> position in header.tensors
  for (const io::CheckpointManifest& part : parts) {
    for (const io::ShardFile& f : part.files()) *header.add_files() = f;
    for (const io::TensorEntry& entry : part.tensors()) {
      auto [it, added] = index.emplace(entry.name(), header.tensors_size());
      if (added) {
        *header.add_tensors() = entry;
        continue;
      }
      io::TensorEntry& merged = *header.mutable_tensors(it->second);
      if (!same_layout(merged, entry)) {
        return absl::InvalidArgumentError(
            absl::StrCat("checkpoint tensor '", entry.name(),
                         "' is given by two ranks with different global shapes, dtypes or splits"));
      }
      for (const io::TensorChunk& chunk : entry.chunks()) *merged.add_chunks() = chunk;
    }
  }
  for (const io::TensorEntry& entry : header.tensors()) {
    WEFT_RETURN_IF_ERROR(check_chunks_tile(entry));
  }
  return header;
}

absl::Status commit_checkpoint(const std::string& tmp_dir, const std::string& final_dir,
                               io::CheckpointManifest manifest) {
  manifest.set_format_version(kCheckpointFormat);
  manifest.set_manifest_sha256(manifest_digest(manifest));
  WEFT_RETURN_IF_ERROR(io::write_file_atomic((fs::path(tmp_dir) / kManifestFile).string(),
                                             manifest.SerializeAsString()));
  std::error_code ec;
  // A rerun replaces an older checkpoint of the same step only once the new one is complete.
  if (fs::exists(final_dir, ec)) fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp_dir, " to ", final_dir, ": ", ec.message()));
  }
  return absl::OkStatus();
}

std::string manifest_digest(io::CheckpointManifest manifest) {
  manifest.clear_manifest_sha256();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    manifest.SerializeToCodedStream(&coded);
  }
  return io::sha256_hex(bytes);
}

absl::StatusOr<io::CheckpointManifest> read_manifest(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kManifestFile).string();
  WEFT_ASSIGN_OR_RETURN(std::string bytes, io::read_file(path));
  auto damaged = [&](auto&&... why) {
    return absl::DataLossError(absl::StrCat("checkpoint manifest ", path, " is damaged: ", why...));
  };
  if (bytes.empty()) return damaged("the file is empty (0 bytes)");
  io::CheckpointManifest manifest;
  if (!manifest.ParseFromString(bytes)) return damaged("not a CheckpointManifest (unparsable)");
  const int format = manifest.format_version();
  if (format < kOldestReadableFormat || format > kCheckpointFormat) {
    return damaged("format_version ", format, " (this weft reads ", kOldestReadableFormat, " to ",
                   kCheckpointFormat, ")");
  }
  if (format >= 3 && manifest.manifest_sha256() != manifest_digest(manifest)) {
    return damaged(manifest.manifest_sha256().empty() ? "its checksum is missing (truncated?)"
                                                      : "its checksum does not match its bytes");
  }
  if (manifest.files_size() == 0 || manifest.tensors_size() == 0 ||
      manifest.model_config_json().empty()) {
    return damaged("it lists ", manifest.files_size(), " files, ", manifest.tensors_size(),
                   " tensors and ", manifest.model_config_json().size(),
                   " bytes of model config (a checkpoint has all three)");
  }
  std::set<std::string> listed;
  for (const io::ShardFile& f : manifest.files()) listed.insert(f.file());
  for (const io::TensorEntry& entry : manifest.tensors()) {
    for (const io::TensorChunk& chunk : entry.chunks()) {
      if (!listed.count(chunk.file())) {
        return damaged("tensor '", entry.name(), "' has a chunk in ", chunk.file(),
                       ", which is not among its files");
      }
    }
    if (absl::Status s = check_chunks_tile(entry); !s.ok()) return damaged(s.message());
  }
  return manifest;
}

}  // namespace weft::train
