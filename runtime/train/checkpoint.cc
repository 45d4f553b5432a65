#include "runtime/train/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "comm/activity.h"
#include "runtime/core/clock.h"
#include "runtime/core/status.h"

namespace weft::train {
namespace fs = std::filesystem;
namespace {

// A status as bytes: empty when OK, else the code's byte then the message.
std::string encode_status(const absl::Status& status) {
  if (status.ok()) return "";
  return absl::StrCat(std::string(1, static_cast<char>(status.code())), status.message());
}

absl::Status decode_status(const std::string& bytes) {
  if (bytes.empty()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(bytes[0]), bytes.substr(1));
}

absl::Status on_rank(const absl::Status& status, size_t rank) {
  if (status.ok()) return status;
  return absl::Status(
      status.code(), absl::StrCat("checkpoint save failed on rank ", rank, ": ", status.message()));
}

}  // namespace

CheckpointWriter::CheckpointWriter(comm::Communicator& world)
    : comm_(world.split(0, world.rank(), "checkpoint")) {}

CheckpointWriter::CheckpointWriter() = default;

CheckpointWriter::~CheckpointWriter() { (void)wait(); }

void CheckpointWriter::save_async(const std::string& dir, io::CheckpointManifest manifest,
                                  std::vector<CheckpointTensor> tensors) {
  (void)wait();  // the previous save's status was already returned or is superseded
  {
    std::lock_guard<std::mutex> lock(mutex_);
    snapshot_done_ = false;
    write_done_ = false;
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

absl::Status CheckpointWriter::poll() {
  std::lock_guard<std::mutex> lock(mutex_);
  return write_done_ ? status_ : absl::OkStatus();
}

void CheckpointWriter::run(const std::string& dir, io::CheckpointManifest manifest,
                           std::vector<CheckpointTensor> tensors) {
  // The save's collectives wait for the slowest rank's write (shards are uneven): not a hang
  // the health monitor should end the job for; a rank that really hangs stops the training
  // loop's own collectives.
  const comm::IdleWaitScope idle;
  auto start = SteadyClock::now();
  // Snapshot: host copies of everything, after which training may change the originals. The
  // host buffers are kept for the next save (whose tensors usually have the same shapes): a
  // reused buffer is already mapped, a fresh one page-faults on every first touch.
  host_buffers_.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    Tensor& buffer = host_buffers_[i];
    const Tensor& value = tensors[i].value;
    if (buffer.shape() == value.shape() && buffer.dtype() == value.dtype() && buffer.defined()) {
      buffer.copy_from(value);
    } else if (value.device().is_cuda()) {
      buffer = Tensor::pinned(value.shape(), value.dtype());  // reused by every later save
      buffer.copy_from(value);
    } else {
      buffer = value.to(Device::cpu());
    }
    tensors[i].value = buffer;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    snapshot_done_ = true;
    snapshot_seconds_ = seconds_since(start);
  }
  cv_.notify_all();

  start = SteadyClock::now();
  absl::Status status = write(dir, manifest, tensors);
  std::lock_guard<std::mutex> lock(mutex_);
  status_ = status;
  write_done_ = true;
  write_seconds_ = seconds_since(start);
}

absl::Status CheckpointWriter::write(const std::string& dir, const io::CheckpointManifest& manifest,
                                     const std::vector<CheckpointTensor>& host) {
  const std::string final_dir = (fs::path(dir) / step_dir_name(manifest.step())).string();
  const std::string tmp_dir = final_dir + ".tmp";
  // Rank 0 alone creates the directory; no rank writes into it before all know it exists.
  WEFT_RETURN_IF_ERROR(agree(rank() == 0 ? prepare_tmp_dir(tmp_dir) : absl::OkStatus()));

  absl::StatusOr<io::CheckpointManifest> part = write_shard(tmp_dir, rank(), host);
  // Each rank sends its part, or its error as 'E' + encoded status.
  const std::vector<std::string> parts =
      all_gather_bytes(part.ok() ? absl::StrCat("P", part->SerializeAsString())
                                 : absl::StrCat("E", encode_status(part.status())));
  absl::Status outcome;
  if (rank() == 0) {
    std::vector<io::CheckpointManifest> manifests(parts.size());
    for (size_t r = 0; r < parts.size() && outcome.ok(); ++r) {
      if (parts[r][0] == 'E') {
        outcome = on_rank(decode_status(parts[r].substr(1)), r);
      } else if (!manifests[r].ParseFromString(parts[r].substr(1))) {
        outcome = absl::DataLossError(absl::StrCat("rank ", r, "'s manifest part is corrupt"));
      }
    }
    if (outcome.ok()) {
      absl::StatusOr<io::CheckpointManifest> merged = merge_parts(manifest, manifests);
      outcome = merged.ok() ? commit_checkpoint(tmp_dir, final_dir, *merged)
                            : on_rank(merged.status(), 0);
    }
    std::error_code ec;
    if (!outcome.ok()) fs::remove_all(tmp_dir, ec);  // never leave a failed save's files behind
  }
  // Rank 0's outcome, on every rank.
  return decode_status(all_gather_bytes(encode_status(outcome))[0]);
}

absl::Status CheckpointWriter::agree(const absl::Status& mine) {
  const std::vector<std::string> all = all_gather_bytes(encode_status(mine));
  for (size_t r = 0; r < all.size(); ++r) {
    if (!all[r].empty()) return on_rank(decode_status(all[r]), r);
  }
  return absl::OkStatus();
}

std::vector<std::string> CheckpointWriter::all_gather_bytes(const std::string& bytes) {
  if (!comm_) return {bytes};
  const int p = comm_->size();
  Tensor length = Tensor::from_ints({static_cast<int64_t>(bytes.size())}, {1});
  Tensor lengths = Tensor::zeros({p}, length.dtype(), Device::cpu());
  comm_->all_gather(length, lengths);
  int64_t longest = 1;
  for (int r = 0; r < p; ++r) longest = std::max(longest, lengths.data<int64_t>()[r]);
  Tensor mine = Tensor::zeros({longest}, DType::kU8, Device::cpu());  // [longest], zero padded
  std::memcpy(mine.raw(), bytes.data(), bytes.size());
  Tensor all = Tensor::empty({p * longest}, DType::kU8, Device::cpu());  // [P * longest]
  comm_->all_gather(mine, all);
  std::vector<std::string> out;
  for (int r = 0; r < p; ++r) {
    out.emplace_back(static_cast<const char*>(all.raw()) + r * longest,
                     static_cast<size_t>(lengths.data<int64_t>()[r]));
  }
  return out;
}

absl::Status save_checkpoint(const std::string& dir, io::CheckpointManifest manifest,
                             std::vector<CheckpointTensor> tensors) {
  CheckpointWriter writer;
  writer.save_async(dir, std::move(manifest), std::move(tensors));
  return writer.wait();
}

}  // namespace weft::train
