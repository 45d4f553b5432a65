// Fault injection on 2 ranks: damaged checkpoints, a full disk, NaN, absurd configs, malformed
// safetensors, reinterpreted flags, crash leftovers, relaunches and SIGTERM. Every fault is
// either survived exactly (resume after SIGTERM equals an uninterrupted run) or refused with
// exit code != 0 and a message naming the problem — never silently wrong. docs/reliability.md
// tabulates the faults and outcomes.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "runtime/io/file_util.h"
#include "runtime/train/checkpoint_reader.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kRanks = 2;
const char kModel[] = "llama_gqa";  // max_position_embeddings 64, 4 heads

// A scratch directory holding a token file of 16 sequences of 16 tokens.
struct Scratch {
  std::string dir = make_temp_dir("weft_faults");
  std::string tokens = write_token_file(dir, random_ids({16, 16}, 7, 96));
};

std::string train_args(const Scratch& s, int64_t steps, const std::string& extra = "") {
  return absl::StrCat("train --model ", model_fixture(kModel), " --data ", s.tokens, " --steps ",
                      steps, " --global-batch 4 --seq-len 16 --lr 1e-3 ", extra);
}

// A 2-rank run to step 4 that saves steps 2 and 4 into `ckpt`.
void save_steps_2_and_4(const Scratch& s, const std::string& ckpt) {
  RunResult r = run_weft(train_args(s, 4, "--save " + ckpt + " --save-every 2"), kRanks);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

void expect_refused(const RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
}

// The names ("step-N") of the complete checkpoints in `dir`, oldest first.
std::vector<std::string> complete_checkpoint_names(const std::string& dir) {
  std::vector<std::string> names;
  for (const std::string& path : train::complete_checkpoints(dir)) {
    names.push_back(fs::path(path).filename().string());
  }
  return names;
}

void flip_byte(const std::string& path, size_t at) {
  std::string bytes = *io::read_file(path);
  ASSERT_LT(at, bytes.size());
  bytes[at] ^= 0x40;
  ASSERT_TRUE(io::write_file_atomic(path, bytes).ok());
}

// A copy of the fixture model that a test may change.
std::string copy_model(const std::string& dir) {
  const std::string out = make_temp_dir(dir + "/model") + "/" + kModel;
  fs::copy(model_fixture(kModel), out, fs::copy_options::recursive);
  return out;
}

// A safetensors file from its JSON header text and data section.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  const uint64_t len = header.size();
  return std::string(reinterpret_cast<const char*>(&len), 8) + header + data;
}

// A tmpfs of `bytes` at DIR/name, unmounted at the end of the test; empty when mounting is not
// permitted here.
class SmallDisk {
 public:
  SmallDisk(const std::string& dir, size_t bytes) : path_(dir + "/small_disk") {
    fs::create_directories(path_);
    const std::string options = absl::StrCat("size=", bytes);
    if (mount("tmpfs", path_.c_str(), "tmpfs", 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      why_ = std::strerror(errno);
    }
  }
  ~SmallDisk() {
    if (mounted_) umount(path_.c_str());
  }
  [[nodiscard]] bool mounted() const { return mounted_; }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] const std::string& why() const { return why_; }

 private:
  std::string path_;
  bool mounted_ = false;
  std::string why_;
};

TEST(Faults, FlippedShardBytesAreRefusedByLoadAndExport) {
  Scratch s;
  const std::string ckpt = s.dir + "/ckpt";
  ASSERT_NO_FATAL_FAILURE(save_steps_2_and_4(s, ckpt));
  const std::string shard = ckpt + "/step-00000004/shard-00000.safetensors";
  const std::string pristine = *io::read_file(shard);
  const std::string resume = train_args(s, 6, "--load " + ckpt + " --save " + s.dir + "/out");
  // One byte in the data section, then one in the JSON header.
  for (size_t at : {pristine.size() / 2, size_t{20}}) {
    SCOPED_TRACE(absl::StrCat("flipped byte ", at));
    ASSERT_TRUE(io::write_file_atomic(shard, pristine).ok());
    flip_byte(shard, at);
    RunResult load = run_weft(resume, kRanks);
    expect_refused(load, "shard-00000.safetensors");
    EXPECT_NE(load.err.find("damaged"), std::string::npos) << load.err;
    EXPECT_NE(load.err.find("--load-fallback"), std::string::npos) << load.err;
    expect_refused(
        run_weft(absl::StrCat("ckpt export --from ", ckpt, " --to ", s.dir, "/hf"), kRanks),
        "damaged");
    EXPECT_NE(run_weft("ckpt verify --from " + ckpt, kRanks).exit_code, 0);

    // The explicit fallback resumes from step 2 with a warning, and continues to step 6.
    RunResult fallback = run_weft(resume + " --load-fallback", kRanks);
    EXPECT_EQ(fallback.exit_code, 0) << fallback.err;
    EXPECT_NE(fallback.err.find("resumed from " + ckpt + "/step-00000002"), std::string::npos)
        << fallback.err;
    EXPECT_NE(fallback.err.find(" W r0 "), std::string::npos) << "a warning: " << fallback.err;
  }
  // The data-section flip names the tensor whose bytes changed.
  ASSERT_TRUE(io::write_file_atomic(shard, pristine).ok());
  flip_byte(shard, pristine.size() / 2);
  RunResult verify = run_weft("ckpt verify --from " + ckpt);
  EXPECT_NE(verify.err.find("' damaged"), std::string::npos) << verify.err;
}

TEST(Faults, DeletedEmptyOrTruncatedManifestIsAnErrorEverywhere) {
  Scratch s;
  const std::string ckpt = s.dir + "/ckpt";
  ASSERT_NO_FATAL_FAILURE(save_steps_2_and_4(s, ckpt));
  const std::string manifest = ckpt + "/step-00000004/manifest.pb";
  const std::string pristine = *io::read_file(manifest);
  const std::string load = train_args(s, 6, "--load " + ckpt);
  const std::string exported = absl::StrCat("ckpt export --from ", ckpt, " --to ", s.dir, "/hf");

  fs::remove(manifest);
  RunResult verify = run_weft("ckpt verify --from " + ckpt, kRanks);
  expect_refused(verify, "step-00000004: no manifest.pb");
  expect_refused(run_weft(load, kRanks), "has no manifest.pb");
  expect_refused(run_weft(exported, kRanks), "has no manifest.pb");
  RunResult fallback = run_weft(load + " --load-fallback", kRanks);
  EXPECT_EQ(fallback.exit_code, 0) << fallback.err;

  ASSERT_TRUE(io::write_file_atomic(manifest, "").ok());
  expect_refused(run_weft("ckpt verify --from " + ckpt, kRanks), "empty (0 bytes)");
  expect_refused(run_weft(load, kRanks), "empty (0 bytes)");
  expect_refused(run_weft(exported, kRanks), "empty (0 bytes)");
  EXPECT_FALSE(fs::exists(s.dir + "/hf/config.json"));

  for (size_t cut : {size_t{1}, pristine.size() / 2, pristine.size() - 20}) {
    SCOPED_TRACE(absl::StrCat("manifest truncated to ", cut, " of ", pristine.size(), " bytes"));
    ASSERT_TRUE(io::write_file_atomic(manifest, pristine.substr(0, cut)).ok());
    expect_refused(run_weft("ckpt verify --from " + ckpt), "manifest.pb is damaged");
    expect_refused(run_weft(exported), "manifest.pb is damaged");
  }
}

TEST(Faults, FullDiskForMetricsFailsTheRun) {
  Scratch s;
  SmallDisk disk(s.dir, 4096);
  // Without permission to mount a small tmpfs, /dev/full answers every write with ENOSPC.
  const std::string metrics = disk.mounted() ? disk.path() + "/metrics.jsonl" : "/dev/full";
  if (!disk.mounted()) std::printf("no tmpfs (%s): using /dev/full\n", disk.why().c_str());
  RunResult r = run_weft(train_args(s, 200, "--metrics " + metrics + " --log-every 1000"), kRanks);
  expect_refused(r, "No space left on device");
  EXPECT_NE(r.err.find(metrics), std::string::npos) << r.err;
}

TEST(Faults, NanLossStopsTheRunAndTheMetricsStayValidJson) {
  Scratch s;
  const std::string model = copy_model(s.dir);
  auto weights = io::SafetensorsFile::open(model + "/model.safetensors").value();
  io::NamedTensors tensors;
  for (const std::string& name : weights->names()) {
    Tensor t = weights->get_f32(name).value();
    if (name == "model.norm.weight") t.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
    tensors.emplace_back(name, t);
  }
  ASSERT_TRUE(io::write_safetensors(model + "/model.safetensors", tensors).ok());
  const std::string metrics = s.dir + "/metrics.jsonl";
  RunResult r =
      run_weft(absl::StrCat("train --model ", model, " --data ", s.tokens,
                            " --steps 3 --global-batch 4 --seq-len 16 --metrics ", metrics),
               kRanks);
  expect_refused(r, "step 1: the loss is nan");
  const std::string text = read_text(metrics);
  ASSERT_FALSE(text.empty());
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    json record;
    ASSERT_NO_THROW(record = json::parse(line)) << line;  // strict: nan or inf would throw
    EXPECT_TRUE(record["loss"].is_null()) << line;
    EXPECT_EQ(record["nonfinite"], json::array({"loss", "grad_norm"})) << line;
  }
  // --skip-nonfinite: every step is skipped, named, marked in the metrics; the run ends with 0.
  RunResult skipped = run_weft(
      absl::StrCat("train --model ", model, " --data ", s.tokens,
                   " --steps 3 --global-batch 4 --seq-len 16 --skip-nonfinite --metrics ", metrics),
      kRanks);
  EXPECT_EQ(skipped.exit_code, 0) << skipped.err;
  EXPECT_NE(skipped.err.find("step 3 skipped: the loss is nan"), std::string::npos) << skipped.err;
  std::istringstream again(read_text(metrics));
  int records = 0;
  for (std::string line; std::getline(again, line); ++records) {
    EXPECT_EQ(json::parse(line)["skipped"], true) << line;
  }
  EXPECT_EQ(records, 3);
}

TEST(Faults, AbsurdConfigIsAnErrorNotACrash) {
  Scratch s;
  const std::string model = copy_model(s.dir);
  json config = json::parse(read_text(model + "/config.json"));
  config["hidden_size"] = 1099511627776;
  ASSERT_TRUE(io::write_file_atomic(model + "/config.json", config.dump()).ok());
  const std::string train = absl::StrCat("train --model ", model, " --data ", s.tokens,
                                         " --steps 1 --global-batch 4 --seq-len 16");
  expect_refused(run_weft(train, kRanks), "model.embed_tokens.weight has shape [96, 64]");
  expect_refused(
      run_weft("generate --tp 2 --greedy --max-new-tokens 2 --prompt-ids 1,2 --model " + model,
               kRanks),
      "config.json implies [96, 1099511627776]");
  // With no weights to compare against, the allocation itself fails: an error naming the
  // tensor and the size, not SIGABRT.
  RunResult random = run_weft(train + " --init-random", kRanks);
  expect_refused(random, "cannot allocate the model: parameter ");
}

// The fixture's model.safetensors rewritten by `edit` (header JSON, data bytes).
std::string edited_model(const std::string& dir,
                         const std::function<void(json& header, std::string& data)>& edit) {
  const std::string model = copy_model(dir);
  const std::string path = model + "/model.safetensors";
  const std::string bytes = *io::read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  json header = json::parse(bytes.substr(8, n));
  std::string data = bytes.substr(8 + n);
  edit(header, data);
  EXPECT_TRUE(io::write_file_atomic(path, safetensors_bytes(header.dump(), data)).ok());
  return model;
}

TEST(Faults, SafetensorsThatTheFormatForbidsAreRefused) {
  Scratch s;
  auto eval = [&](const std::string& model) {
    return run_weft(absl::StrCat("eval --model ", model, " --tokens ", s.tokens, " --out ", s.dir,
                                 "/out.safetensors"),
                    kRanks);
  };
  // A duplicate name pointing at NaN bytes appended to the data (last-wins would read them).
  const std::string duplicate = edited_model(s.dir, [](json& header, std::string& data) {
    const uint64_t begin = data.size();
    const std::vector<float> nans(64, std::numeric_limits<float>::quiet_NaN());
    data.append(reinterpret_cast<const char*>(nans.data()), nans.size() * sizeof(float));
    json entry = header["model.norm.weight"];
    entry["data_offsets"] = {begin, begin + 64 * sizeof(float)};
    // json objects cannot hold a key twice: splice the duplicate into the text instead.
    header["__weft_duplicate__"] = entry;
  });
  {
    const std::string path = duplicate + "/model.safetensors";
    std::string bytes = *io::read_file(path);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    std::string text = bytes.substr(8, n);
    const size_t at = text.find("\"__weft_duplicate__\"");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, std::strlen("\"__weft_duplicate__\""), "\"model.norm.weight\"");
    ASSERT_TRUE(io::write_file_atomic(path, safetensors_bytes(text, bytes.substr(8 + n))).ok());
  }
  expect_refused(eval(duplicate), "tensor 'model.norm.weight' is listed twice");

  const std::string gap = edited_model(s.dir, [](json& header, std::string& data) {
    // Move every tensor 8 bytes later: bytes [0, 8) belong to nobody.
    data.insert(0, 8, '\0');
    for (auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;
      entry["data_offsets"][0] = entry["data_offsets"][0].get<uint64_t>() + 8;
      entry["data_offsets"][1] = entry["data_offsets"][1].get<uint64_t>() + 8;
    }
  });
  expect_refused(eval(gap), "data bytes [0, 8) before tensor");

  const std::string trailing =
      edited_model(s.dir, [](json&, std::string& data) { data.append(16, '\x7f'); });
  expect_refused(eval(trailing), "16 trailing bytes after the last tensor");
}

TEST(Faults, FlagsThatWereSilentlyReinterpretedAreErrors) {
  Scratch s;
  expect_refused(run_weft(train_args(s, 2, "--tp 0"), kRanks), "--tp 0 must be >= 1");
  expect_refused(run_weft(train_args(s, 2, "--tp -2"), kRanks), "--tp -2 must be >= 1");
  expect_refused(run_weft(train_args(s, 2, "--lr inf"), kRanks), "--lr expects a finite number");
  expect_refused(run_weft(train_args(s, 2, "--lr nan"), kRanks), "--lr expects a finite number");
  expect_refused(run_weft(train_args(s, 0), kRanks), "--steps 0 must be >= 1");
  expect_refused(run_weft(absl::StrCat("train --model ", model_fixture(kModel), " --data ",
                                       s.tokens, " --steps 2 --global-batch 32 --seq-len 16"),
                          kRanks),
                 "which has 16 sequences");

  // Sequences longer than max_position_embeddings (64).
  const std::string long_tokens =
      write_token_file(make_temp_dir("weft_long"), random_ids({2, 80}, 3, 96));
  expect_refused(run_weft(absl::StrCat("eval --model ", model_fixture(kModel), " --tokens ",
                                       long_tokens, " --out ", s.dir, "/o.safetensors"),
                          kRanks),
                 "more than the model's max_position_embeddings 64");
  expect_refused(run_weft(absl::StrCat("generate --tp 2 --greedy --model ", model_fixture(kModel),
                                       " --prompt-ids 1,2,3 --max-new-tokens 62"),
                          kRanks),
                 "exceed the model's max_position_embeddings 64");

  // Offline resharding follows the same mesh rules as training (4 heads: tp 3 is refused).
  const std::string ckpt = s.dir + "/ckpt";
  ASSERT_EQ(run_weft(train_args(s, 1, "--save " + ckpt)).exit_code, 0);
  expect_refused(run_weft(absl::StrCat("ckpt reshard --from ", ckpt, " --to ", s.dir,
                                       "/resharded --to-mesh tp=3")),
                 "--tp 3 does not divide num_attention_heads 4");
  EXPECT_FALSE(fs::exists(s.dir + "/resharded/step-00000001"));

  RunResult help = run_weft("ckpt --help", kRanks);
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_NE(help.out.find("verify"), std::string::npos) << help.out;
}

TEST(Faults, CrashLeftoversAreListedThenRemovedAndARelaunchOfAFinishedJobSucceeds) {
  Scratch s;
  const std::string ckpt = s.dir + "/ckpt";
  const std::string args = train_args(s, 2, "--save " + ckpt + " --load " + ckpt);
  ASSERT_EQ(run_weft(train_args(s, 2, "--save " + ckpt), kRanks).exit_code, 0);
  // What a kill -9 in the middle of a save leaves: a half-written step directory.
  const std::string leftover = ckpt + "/step-00000004.tmp";
  fs::create_directories(leftover);
  ASSERT_TRUE(io::write_file_atomic(leftover + "/shard-00000.safetensors", "partial").ok());

  RunResult verify = run_weft("ckpt verify --from " + ckpt);
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_NE(verify.out.find("step-00000004.tmp is the leftover of an interrupted save"),
            std::string::npos)
      << verify.out;

  // Relaunching the finished job (a retry wrapper) exits 0 and leaves everything as it was.
  RunResult again = run_weft(args, kRanks);
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("nothing to do"), std::string::npos) << again.out;

  // The next run that saves removes the leftover first; --keep-last never counted it.
  RunResult more =
      run_weft(train_args(s, 3, "--save " + ckpt + " --load " + ckpt + " --keep-last 1"), kRanks);
  EXPECT_EQ(more.exit_code, 0) << more.err;
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_TRUE(fs::exists(ckpt + "/step-00000003/manifest.pb"));
  EXPECT_FALSE(fs::exists(ckpt + "/step-00000002"));
}

TEST(Faults, AFailedBackgroundSaveStopsTheRunAtTheNextStep) {
  Scratch s;
  SmallDisk disk(s.dir, 1600 << 10);  // one checkpoint (1.1 MB) fits, a second does not
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a small tmpfs here: " << disk.why();
  const std::string ckpt = disk.path() + "/ckpt";
  const std::string metrics = s.dir + "/metrics.jsonl";
  RunResult r = run_weft(
      train_args(s, 12, "--save " + ckpt + " --save-every 2 --metrics " + metrics), kRanks);
  expect_refused(r, "checkpoint save failed");
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  // The save of step 4 failed; the run stopped at step 5 (the next boundary) or, if the write
  // was still going then, when step 6 waited for it: never later.
  EXPECT_LE(metric_losses(metrics).size(), 5u);
  EXPECT_EQ(run_weft("ckpt verify --from " + ckpt).exit_code, 0);
  EXPECT_TRUE(fs::exists(ckpt + "/step-00000002/manifest.pb"));
  EXPECT_FALSE(fs::exists(ckpt + "/step-00000004"));
}

TEST(Faults, SigtermSavesACheckpointThatResumesToTheSameLosses) {
  Scratch s;
  const std::string ckpt = s.dir + "/ckpt";
  const std::string rc_file = s.dir + "/rc";
  // A long run, started in the background; its ranks are found by the unique data path.
  const std::string cmd =
      absl::StrCat("(timeout 300 ", WEFT_MPIRUN, " -np ", kRanks, " ", WEFT_BINARY, " ",
                   train_args(s, 1000000,
                              "--lr 1e-4 --save " + ckpt +
                                  " --save-every 100 --keep-last 1 --log-every 1000 --metrics " +
                                  s.dir + "/metrics.jsonl"),
                   " >", s.dir, "/out 2>", s.dir, "/err; echo $? >", rc_file, ") &");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto wait_for = [](const std::function<bool()>& done) {
    for (int i = 0; i < 1200 && !done(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return done();
  };
  ASSERT_TRUE(wait_for([&] { return !complete_checkpoint_names(ckpt).empty(); }));
  // SIGTERM to every rank, as Slurm sends it (not to mpirun).
  const std::string kill =
      absl::StrCat("pkill -TERM -f '^", WEFT_BINARY, " train .*", s.tokens, "'");
  ASSERT_EQ(std::system(kill.c_str()), 0);
  ASSERT_TRUE(wait_for([&] { return !read_text(rc_file).empty(); }));
  const std::string err = read_text(s.dir + "/err");
  EXPECT_EQ(std::stoi(read_text(rc_file)), 75) << err;
  EXPECT_NE(err.find("stopped by SIGTERM after step "), std::string::npos) << err;
  const std::vector<std::string> saved = complete_checkpoint_names(ckpt);
  ASSERT_EQ(saved.size(), 1u);
  const int64_t stopped = std::stoll(saved[0].substr(std::strlen("step-")));
  ASSERT_GT(stopped, 0);
  ASSERT_EQ(run_weft("ckpt verify --from " + ckpt).exit_code, 0);

  // Resume for 5 steps into the same metrics file; an uninterrupted run to the same step has the
  // same losses there, and the file holds every step once.
  const std::string resumed = s.dir + "/metrics.jsonl";
  RunResult r = run_weft(
      train_args(s, stopped + 5, "--lr 1e-4 --load " + ckpt + " --metrics " + resumed), kRanks);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string straight = s.dir + "/straight.jsonl";
  RunResult ref = run_weft(
      train_args(s, stopped + 5, "--lr 1e-4 --log-every 1000 --metrics " + straight), kRanks, 600);
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  const std::vector<double> a = metric_losses(resumed);
  const std::vector<double> e = metric_losses(straight);
  ASSERT_EQ(a.size(), static_cast<size_t>(stopped + 5));
  std::istringstream lines(read_text(resumed));
  int64_t expected_step = 1;
  for (std::string line; std::getline(lines, line); ++expected_step) {
    EXPECT_EQ(json::parse(line)["step"].get<int64_t>(), expected_step);
  }
  ASSERT_EQ(e.size(), a.size());
  for (int64_t step = stopped; step < stopped + 5; ++step) {
    EXPECT_GT(a[step], 0.01) << "a loss that still carries information";
    EXPECT_EQ(a[step], e[step]) << "step " << step + 1;
  }
}

}  // namespace
}  // namespace weft::testing
