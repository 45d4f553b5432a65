// Running the `weft` binary from tests: alone or under mpirun, capturing exit code and output.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/io/safetensors.h"
#include "tests/support/test_util.h"

namespace weft::testing {

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `weft ARGS` on `ranks` ranks (1: no mpirun), killed after `timeout_s` (a hang fails).
inline RunResult run_weft(const std::string& args, int ranks = 1, int timeout_s = 300) {
  static int counter = 0;
  const std::string dir = make_temp_dir("weft_cli_run");
  const std::string out = absl::StrCat(dir, "/out", counter, ".txt");
  const std::string err = absl::StrCat(dir, "/err", counter++, ".txt");
  const std::string launcher =
      ranks > 1 ? absl::StrCat(WEFT_MPIRUN, " -np ", ranks, " ") : std::string();
  const std::string cmd = absl::StrCat("timeout ", timeout_s, " ", launcher, WEFT_BINARY, " ", args,
                                       " >", out, " 2>", err);
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

inline std::string model_fixture(const std::string& name) {
  return fixtures_dir() + "/models/" + name;
}

// Writes a token FILE holding `tokens` [B, T].
inline std::string write_token_file(const std::string& dir, const Tensor& tokens) {
  const std::string path = dir + "/tokens.txt";
  std::ofstream f(path);
  const std::vector<int64_t> ids = tokens.to_ints();
  const int64_t t = tokens.dim(1);
  for (size_t i = 0; i < ids.size(); ++i) f << ids[i] << ((i + 1) % t == 0 ? "\n" : " ");
  return path;
}

inline Tensor load_tensor(const std::string& file, const std::string& name) {
  auto st = io::SafetensorsFile::open(file);
  EXPECT_TRUE(st.ok()) << st.status();
  if (!st.ok()) return Tensor();
  auto t = (*st)->get_f32(name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Tensor();
}

// A mesh to run on: the rank count and the flags that lay the model over it.
struct Mesh {
  int ranks;
  std::string flags;
};

// `weft eval --grads` of `model` on the token file `tokens` over `mesh`; returns the output
// file (in `dir`, named after the mesh).
inline std::string eval_on_mesh(const std::string& model, const std::string& tokens,
                                const std::string& dir, const Mesh& mesh) {
  const std::string out =
      absl::StrCat(dir, "/out", mesh.ranks, std::hash<std::string>{}(mesh.flags), ".safetensors");
  RunResult r = run_weft(absl::StrCat("eval --model ", model, " --tokens ", tokens, " --out ", out,
                                      " --grads ", mesh.flags),
                         mesh.ranks);
  EXPECT_EQ(r.exit_code, 0) << mesh.flags << ": " << r.err;
  return out;
}

// Every tensor of the safetensors file `actual` equals `expected`'s within `tol`.
inline void expect_same_tensors(const std::string& actual, const std::string& expected,
                                double tol) {
  auto want = io::SafetensorsFile::open(expected).value();
  auto got = io::SafetensorsFile::open(actual).value();
  EXPECT_EQ(got->names(), want->names());
  for (const std::string& name : want->names()) {
    SCOPED_TRACE(name);
    if (!got->contains(name)) continue;
    EXPECT_TENSORS_CLOSE(got->get_f32(name).value(), want->get_f32(name).value(), tol);
  }
}

// The loss of every step in a `--metrics` file (each line must carry the step metrics).
inline std::vector<double> metric_losses(const std::string& metrics) {
  std::vector<double> losses;
  std::istringstream lines(read_text(metrics));
  for (std::string line; std::getline(lines, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    for (const char* key : {"step", "loss", "grad_norm", "lr", "step_time_s", "tokens_per_s"}) {
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
    }
    losses.push_back(j["loss"].get<double>());
  }
  return losses;
}

// Exports the newest checkpoint of DIR/ckpt to DIR/hf; returns its weights file.
inline std::string export_weights(const std::string& dir) {
  RunResult r = run_weft(absl::StrCat("ckpt export --from ", dir, "/ckpt --to ", dir, "/hf"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir + "/hf/model.safetensors";
}

// Two training runs (DIR/metrics.jsonl and DIR/ckpt each) are the same run: every step's loss
// within 1e-5 relative and the final weights within 1e-5.
inline void expect_same_run(const std::string& actual, const std::string& expected) {
  const std::vector<double> a = metric_losses(actual + "/metrics.jsonl");
  const std::vector<double> e = metric_losses(expected + "/metrics.jsonl");
  ASSERT_EQ(a.size(), e.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], e[i], 1e-5 * e[i]) << "step " << i + 1;
  expect_same_tensors(export_weights(actual), export_weights(expected), 1e-5);
}

// A Llama model directory holding only config.json (for --init-random): hidden 32, MLP 64,
// 4 heads / 2 KV heads, tied embeddings, 64 positions, `layers` layers and `vocab` ids.
inline std::string llama_config_model(int64_t vocab = 96, int64_t layers = 4) {
  const std::string dir = make_temp_dir("weft_llama_config");
  std::ofstream(dir + "/config.json")
      << R"({"architectures": ["LlamaForCausalLM"], "vocab_size": )" << vocab
      << R"(, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": )" << layers
      << R"(, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64, "tie_word_embeddings": true})";
  return dir;
}

// The training token file of the llama_gqa fixture: sequences of 12 ids below 96.
inline std::string train_tokens() { return fixtures_dir() + "/train/llama_gqa/tokens.txt"; }

// `weft train` of `model` (--init-random, seed 3) for `steps` steps, 4 sequences of `seq_len`
// per step, metrics in DIR/metrics.jsonl, checkpoints in DIR/ckpt. eps 1e-3: see
// cli_train_test.cc (AdamW with eps 1e-8 amplifies f32 summation-order noise).
inline std::string train_args(const std::string& model, const std::string& dir, int steps,
                              const std::string& data = train_tokens(), int seq_len = 12) {
  return absl::StrCat("train --model ", model, " --init-random --seed 3 --data ", data,
                      " --global-batch 4 --seq-len ", seq_len,
                      " --lr 1e-2 --weight-decay 0.1 --eps 1e-3 --steps ", steps, " --metrics ",
                      dir, "/metrics.jsonl --save ", dir, "/ckpt");
}

// `steps` training steps of `model` (train_args plus `extra`) on one rank, then on each mesh:
// every mesh's run equals the one-rank run (expect_same_run).
inline void expect_meshes_train_alike(const std::string& model, const std::vector<Mesh>& meshes,
                                      int steps, const std::string& extra = "") {
  const std::string one = make_temp_dir("weft_train_one");
  RunResult base = run_weft(absl::StrCat(train_args(model, one, steps), " ", extra));
  ASSERT_EQ(base.exit_code, 0) << base.err;
  for (const Mesh& m : meshes) {
    SCOPED_TRACE(absl::StrCat(m.ranks, " ranks ", m.flags));
    const std::string dir = make_temp_dir("weft_train_mesh");
    RunResult r =
        run_weft(absl::StrCat(train_args(model, dir, steps), " ", extra, " ", m.flags), m.ranks);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_run(dir, one);
  }
}

// The metrics' peak_bytes of one training step of `model` (4 sequences of 64, ids below 96) with
// `flags`.
inline int64_t train_peak_bytes(const std::string& model, const std::string& flags) {
  const std::string dir = make_temp_dir("weft_train_peak");
  const std::string data = write_token_file(dir, random_ids({4, 64}, 3, 96));
  RunResult r = run_weft(absl::StrCat(train_args(model, dir, 1, data, 64), " ", flags));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto line = nlohmann::json::parse(read_text(dir + "/metrics.jsonl"));
  return line["peak_bytes"].get<int64_t>();
}

}  // namespace weft::testing
