// Running the `weft` binary from tests: alone or under mpirun, capturing exit code and output.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

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
  const std::string cmd = absl::StrCat("timeout ", timeout_s, " ", launcher, WEFT_BINARY, " ",
                                       args, " >", out, " 2>", err);
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

}  // namespace weft::testing
