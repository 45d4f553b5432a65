// `weft` over a vocabulary that tp does not divide (97 ids; docs/algorithms.md "Tensor
// parallelism"): eval (logits of exactly 97 columns, loss, every gradient), training and greedy
// generation at tp 2, 3 and 4 (and training with ZeRO-1 over dp 2) equal one rank; a checkpoint
// saved at tp 3 exports 97 rows and resumes at tp 2 and tp 1, and after `weft ckpt reshard` at
// tp 4, as the one-rank run.
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_split.h"
#include "tests/cli/cli_util.h"
#include "tests/support/odd_vocab_model.h"

namespace weft::testing {
namespace {

namespace fs = std::filesystem;

std::string odd_vocab_model(OddVocabWeights kind, bool tied) {
  const std::string dir = make_temp_dir("weft_odd_vocab");
  const io::ModelConfig config = odd_vocab_config(tied);
  write_model_dir(dir, config, odd_vocab_weights(config, kind, 21));
  return dir;
}

Mesh tp_mesh(int tp) { return {tp, absl::StrCat("--tp ", tp)}; }

TEST(OddVocab, EvalAtEveryTpEqualsOneRank) {
  const std::string model = odd_vocab_model(OddVocabWeights::kRandom, /*tied=*/false);
  const std::string dir = make_temp_dir("weft_odd_eval");
  const std::string tokens = write_token_file(dir, random_ids({4, 12}, 5, kOddVocab));
  const std::string one = eval_on_mesh(model, tokens, dir, {1, ""});
  EXPECT_EQ(load_tensor(one, "logits").shape(), (Shape{4, 12, kOddVocab}));
  for (const Mesh& m :
       std::vector<Mesh>{tp_mesh(2),
                         tp_mesh(3),
                         tp_mesh(4),
                         {4, "--tp 2 --pp 2 --micro-batch 2 --sequence-parallel"}}) {
    SCOPED_TRACE(m.flags);
    expect_same_tensors(eval_on_mesh(model, tokens, dir, m), one, 1e-5);
  }
}

std::string last_line(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  return lines.empty() ? "" : lines.back();
}

// The adversarial weights make every real logit negative: a padded id with a logit would win.
TEST(OddVocab, GreedyGenerationAtEveryTpEqualsOneRank) {
  for (const bool adversarial : {true, false}) {
    SCOPED_TRACE(adversarial ? "padding would win" : "random, tied");
    const std::string model =
        adversarial ? odd_vocab_model(OddVocabWeights::kPaddingWouldWin, /*tied=*/false)
                    : odd_vocab_model(OddVocabWeights::kRandom, /*tied=*/true);
    const std::string args = absl::StrCat("generate --model ", model,
                                          " --prompt-ids 5,96,40,2 --max-new-tokens 20 --greedy");
    RunResult one = run_weft(args);
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const std::vector<std::string> ids = absl::StrSplit(last_line(one.out), ',');
    ASSERT_EQ(ids.size(), 20u) << one.out;
    for (const std::string& id : ids) EXPECT_LT(std::stoi(id), kOddVocab);
    for (int tp : adversarial ? std::vector<int>{2, 3, 4} : std::vector<int>{3}) {
      RunResult r = run_weft(absl::StrCat(args, " --tp ", tp), tp);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(last_line(r.out), last_line(one.out)) << "--tp " << tp;
    }
  }
}

// eps 1e-3: see cli_train_test.cc (AdamW with eps 1e-8 amplifies f32 summation-order noise).
std::string train_args(const std::string& model, const std::string& data, const std::string& dir,
                       int steps) {
  return absl::StrCat("train --model ", model, " --data ", data,
                      " --global-batch 4 --seq-len 12 --lr 1e-2 --weight-decay 0.1 --eps 1e-3",
                      " --steps ", steps, " --metrics ", dir, "/metrics.jsonl --save ", dir,
                      "/ckpt");
}

TEST(OddVocab, TrainingAtEveryTpEqualsOneRankAndItsCheckpointMovesAcrossTp) {
  const std::string model = odd_vocab_model(OddVocabWeights::kRandom, /*tied=*/false);
  const std::string data =
      write_token_file(make_temp_dir("weft_odd_data"), random_ids({16, 12}, 8, kOddVocab));
  auto run = [&](const std::string& dir, int steps, const Mesh& mesh, const std::string& extra) {
    RunResult r = run_weft(
        absl::StrCat(train_args(model, data, dir, steps), " ", mesh.flags, " ", extra), mesh.ranks);
    EXPECT_EQ(r.exit_code, 0) << mesh.flags << " " << extra << ": " << r.err;
  };
  const std::string two_steps = make_temp_dir("weft_odd_one2");
  const std::string four_steps = make_temp_dir("weft_odd_one4");
  run(two_steps, 2, {1, ""}, "");
  run(four_steps, 4, {1, ""}, "");

  std::string at_tp3;  // the tp-3 run, saved after step 2
  // ZeRO-1 shards the AdamW moments of the vocabulary's unequal blocks over dp 2 as well.
  for (const Mesh& m : {tp_mesh(2), tp_mesh(3), tp_mesh(4), Mesh{4, "--tp 2 --zero 1"}}) {
    SCOPED_TRACE(m.flags);
    const std::string dir = make_temp_dir("weft_odd_train");
    run(dir, 2, m, "");
    expect_same_run(dir, two_steps);
    if (m.flags == "--tp 3") at_tp3 = dir;
  }
  // The export of the tp-3 checkpoint (written by expect_same_run) holds the 97 rows.
  const int64_t hidden = odd_vocab_config(false).hidden_size;
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    EXPECT_EQ(load_tensor(at_tp3 + "/hf/model.safetensors", name).shape(),
              (Shape{kOddVocab, hidden}))
        << name;
  }

  // Steps 3-4 from the tp-3 checkpoint: loaded at tp 2, at tp 1, and resharded offline for tp 4.
  struct Resume {
    Mesh mesh;
    bool reshard;
  };
  for (const Resume& then :
       {Resume{tp_mesh(2), false}, Resume{{1, ""}, false}, Resume{tp_mesh(4), true}}) {
    SCOPED_TRACE(absl::StrCat("resumed on ", then.mesh.ranks, " ranks ", then.mesh.flags,
                              then.reshard ? " after ckpt reshard" : ""));
    const std::string dir = make_temp_dir("weft_odd_resume");
    fs::remove_all(dir);
    fs::copy(at_tp3, dir, fs::copy_options::recursive);
    std::string load = absl::StrCat("--load ", dir, "/ckpt");
    if (then.reshard) {
      RunResult r = run_weft(absl::StrCat("ckpt reshard --from ", dir, "/ckpt --to ", dir,
                                          "/resharded --to-mesh tp=4"));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      load = absl::StrCat("--load ", dir, "/resharded");
    }
    run(dir, 4, then.mesh, load);
    expect_same_run(dir, four_steps);
  }
}

}  // namespace
}  // namespace weft::testing
