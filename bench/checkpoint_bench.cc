// How long the training loop waits for a checkpoint: a synchronous save (snapshot, write,
// SHA-256, rename: the loop stops for all of it) against an asynchronous one, where the loop
// waits only in wait_snapshot() before its next optimizer step, and only for the part of the
// device -> host copy its own forward/backward did not hide.
//   build/bench/checkpoint_bench [MB=200] [DIR=/tmp] [REPEATS=3]
// Prints one line per measurement (median of REPEATS), in seconds.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/clock.h"
#include "runtime/train/checkpoint.h"

namespace weft::train {
namespace {

using Clock = SteadyClock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// `mb` MB of f32 tensors of 4 MiB each, like the weights and moments of a small model.
std::vector<CheckpointTensor> make_tensors(int64_t mb) {
  std::vector<CheckpointTensor> out;
  const int64_t rows = 1024, cols = 1024;  // [1024, 1024] f32 = 4 MiB
  for (int64_t i = 0; i < std::max<int64_t>(1, mb / 4); ++i) {
    Tensor t = Tensor::full({rows, cols}, static_cast<float>(i));
    out.push_back({"layer." + std::to_string(i) + ".weight", t, {rows, cols}, {}, -1, ""});
  }
  return out;
}

io::CheckpointManifest header(int64_t step) {
  io::CheckpointManifest m;
  m.set_format_version(2);
  m.set_step(step);
  return m;
}

int run(int64_t mb, const std::string& root, int repeats) {
  const std::string dir = (std::filesystem::path(root) / "weft_checkpoint_bench").string();
  std::filesystem::remove_all(dir);
  const std::vector<CheckpointTensor> tensors = make_tensors(mb);
  std::vector<double> sync_s, async_return_s, wait_now_s, wait_after_compute_s, background_s,
      snapshot_s;
  const auto compute = std::chrono::milliseconds(100);  // a forward/backward overlapping the save
  int64_t step = 0;
  CheckpointWriter writer;  // one per run, as in training: its host buffers are reused
  for (int r = 0; r < repeats; ++r) {
    auto start = Clock::now();
    if (!save_checkpoint(dir, header(++step), tensors).ok()) return 1;
    sync_s.push_back(seconds_since(start));

    // The loop's worst case: its next optimizer step comes at once.
    start = Clock::now();
    writer.save_async(dir, header(++step), tensors);
    async_return_s.push_back(seconds_since(start));
    writer.wait_snapshot();
    wait_now_s.push_back(seconds_since(start));
    if (!writer.wait().ok()) return 1;
    background_s.push_back(seconds_since(start));
    snapshot_s.push_back(writer.last_snapshot_seconds());

    // The usual case: forward/backward runs while the snapshot is taken.
    writer.save_async(dir, header(++step), tensors);
    std::this_thread::sleep_for(compute);
    start = Clock::now();
    writer.wait_snapshot();
    wait_after_compute_s.push_back(seconds_since(start));
    if (!writer.wait().ok()) return 1;
  }
  std::filesystem::remove_all(dir);
  std::printf("checkpoint of %lld MB (%zu tensors), median of %d, seconds:\n",
              static_cast<long long>(mb), tensors.size(), repeats);
  std::printf("  synchronous save (loop blocked)                  %.4f\n", median(sync_s));
  std::printf("  async: save_async() returns                      %.4f\n", median(async_return_s));
  std::printf("  async: wait_snapshot() right away (no overlap)   %.4f\n", median(wait_now_s));
  std::printf("  async: wait_snapshot() after 100 ms of compute   %.4f\n",
              median(wait_after_compute_s));
  std::printf("  async: snapshot copy (background)                %.4f\n", median(snapshot_s));
  std::printf("  async: whole save in the background              %.4f\n", median(background_s));
  return 0;
}

}  // namespace
}  // namespace weft::train

int main(int argc, char** argv) {
  const int64_t mb = argc > 1 ? std::atoll(argv[1]) : 200;
  const std::string dir = argc > 2 ? argv[2] : "/tmp";
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  return weft::train::run(mb, dir, repeats);
}
