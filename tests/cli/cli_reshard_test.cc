// `weft ckpt reshard` writes the checkpoint that a save on the target mesh writes: for every
// tensor the same split record (norms stay replicated, and nothing the target holds whole is
// recorded as a tp shard), the same chunks and the same shard files, from a tp 2 checkpoint to
// tp 1, tp 4 (2 KV heads: two head blocks, each held by two tp ranks) and pp 2, and from a tp 1
// checkpoint (which records no split at all) to tp 2; the values survive.
#include <gtest/gtest.h>

#include <map>
#include <tuple>

#include "absl/strings/str_join.h"
#include "runtime/train/checkpoint_reader.h"
#include "tests/cli/cli_util.h"

namespace weft::testing {
namespace {

const std::string kData = fixtures_dir() + "/train/llama_gqa/tokens.txt";

// A checkpoint of one training step of llama_gqa on `ranks` ranks with `mesh` flags, in DIR/ckpt.
std::string native_save(const std::string& dir, int ranks, const std::string& mesh) {
  const RunResult r =
      run_weft(absl::StrCat("train --model ", model_fixture("llama_gqa"), " --data ", kData,
                            " --steps 1 --global-batch 2 --seq-len 12 ", "--lr 1e-3 --save ", dir,
                            "/ckpt ", mesh),
               ranks);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir + "/ckpt";
}

// Per tensor: its split record and its chunks (file, offsets, lengths), as `weft ckpt inspect`
// prints them.
std::map<std::string, std::string> layout_of(const std::string& ckpt) {
  auto reader = train::CheckpointReader::open(ckpt);
  EXPECT_TRUE(reader.ok()) << reader.status();
  std::map<std::string, std::string> out;
  if (!reader.ok()) return out;
  for (const io::TensorEntry& e : (*reader)->manifest().tensors()) {
    std::string& s = out[e.name()];
    s = e.group().empty() ? "replicated"
                          : absl::StrCat("split dim ", e.split_dim(), " over ", e.group());
    for (const io::TensorChunk& c : e.chunks()) {
      absl::StrAppend(&s, " | ", c.file(), " [", absl::StrJoin(c.offsets(), ","), "] [",
                      absl::StrJoin(c.lengths(), ","), "]");
    }
  }
  return out;
}

TEST(Reshard, WritesWhatASaveOnTheTargetMeshWrites) {
  const std::string dir = make_temp_dir("weft_reshard");
  struct Mesh {
    std::string spec;  // --to-mesh
    int ranks;
    std::string flags;  // weft train's
  };
  const Mesh tp1{"tp=1", 1, ""}, tp2{"tp=2", 2, "--tp 2"}, tp4{"tp=4", 4, "--tp 4"},
      pp2{"pp=2", 2, "--pp 2"};
  std::map<std::string, std::string> native;  // mesh spec -> its checkpoint
  for (const Mesh& m : {tp1, tp2, tp4, pp2}) {
    native[m.spec] = native_save(absl::StrCat(dir, "/native-", m.ranks, m.spec), m.ranks, m.flags);
  }
  // The source's values, read back from every resharded checkpoint.
  auto reader = train::CheckpointReader::open(native["tp=2"]);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const std::pair<Mesh, Mesh> cases[] = {{tp2, tp1}, {tp2, tp4}, {tp2, pp2}, {tp1, tp2}};
  for (const auto& [from, to] : cases) {
    SCOPED_TRACE(from.spec + " -> " + to.spec);
    const std::string out = absl::StrCat(dir, "/from-", from.spec, "-to-", to.spec);
    const RunResult r = run_weft(absl::StrCat("ckpt reshard --from ", native[from.spec], " --to ",
                                              out, " --to-mesh ", to.spec));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::map<std::string, std::string> got = layout_of(out);
    const std::map<std::string, std::string> want = layout_of(native[to.spec]);
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, layout] : want) EXPECT_EQ(got.at(name), layout) << name;
    for (const auto& [name, layout] : got) {
      if (name.find("norm.weight") != std::string::npos) {
        EXPECT_EQ(layout.rfind("replicated | ", 0), 0u) << name << ": " << layout;
      }
    }
    if (from.spec != "tp=2") continue;
    auto resharded = train::CheckpointReader::open(out);
    ASSERT_TRUE(resharded.ok()) << resharded.status();
    for (const io::TensorEntry& e : (*reader)->manifest().tensors()) {
      EXPECT_EQ((*resharded)->read(e.name())->to_floats(), (*reader)->read(e.name())->to_floats())
          << e.name();
    }
  }
}

}  // namespace
}  // namespace weft::testing
