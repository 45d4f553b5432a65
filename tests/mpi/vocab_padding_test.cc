// weft-mpi-ranks: 2 3 4
// Tensor parallelism over a vocabulary that tp does not divide (97 ids over tp = the world size:
// 2, 3 or 4) equals one rank (docs/algorithms.md "Tensor parallelism": the vocabulary is padded
// to a multiple of tp and only its real ids are held). Each rank holds exactly its real rows;
// the gathered logits have V columns; the loss, every gradient, AdamW steps and greedy decoding
// match one rank. With weights that make every real logit negative, a padded id would win the
// argmax and swell the loss if it had a logit.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/mpi_communicator.h"
#include "models/causal_lm.h"
#include "models/sharding.h"
#include "models/tp_context.h"
#include "parallel/mesh.h"
#include "parallel/shard_gather.h"
#include "runtime/serve/generator.h"
#include "runtime/train/optimizer.h"
#include "tests/support/mpi_world.h"
#include "tests/support/odd_vocab_model.h"
#include "tests/support/test_util.h"

namespace weft::testing {
namespace {

comm::Communicator& world() { return ::weft::testing::mpi_world(); }

std::unique_ptr<parallel::Mesh> tp_mesh() {
  auto dims = parallel::resolve_dims(world().size(), world().size(), 1, 1, 1, 1);
  WEFT_CHECK(dims.ok()) << dims.status().message();
  return parallel::Mesh::create(world(), *dims);
}

// This rank's block of the vocabulary: {offset, rows}.
models::ShardExtent my_vocab(const parallel::Mesh& mesh) {
  return models::shard_extent(kOddVocab,
                              models::TpContext{mesh.dims().tp, mesh.coord().tp}.vocab());
}

// logits [B, T, V_r] of every tp rank -> [B, T, V].
Tensor gather_logits(const parallel::Mesh& mesh, const Tensor& local) {
  Shape whole = local.shape();
  whole[2] = kOddVocab;
  return parallel::gather_shards(mesh.tp(), local, 2, my_vocab(mesh).offset, whole);
}

TEST(VocabPadding, EachRankHoldsOnlyItsRealRows) {
  auto mesh = tp_mesh();
  const int tp = mesh->dims().tp;
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    const io::ModelConfig config = odd_vocab_config(tied);
    auto model = model_with_weights(config, odd_vocab_weights(config, OddVocabWeights::kRandom, 1),
                                    {.mesh = mesh.get()});
    const models::ShardExtent mine = my_vocab(*mesh);
    // ceil(97 / tp) rows per rank from rank * ceil(97 / tp); the last rank keeps the rest.
    const int64_t block = (kOddVocab + tp - 1) / tp;
    EXPECT_EQ(mine.offset, mesh->coord().tp * block);
    EXPECT_EQ(mine.length, mesh->coord().tp == tp - 1 ? kOddVocab - (tp - 1) * block : block);
    int vocab_params = 0;
    for (const models::Param* p : model->parameters()) {
      if (p->name != "model.embed_tokens.weight" && p->name != "lm_head.weight") continue;
      ++vocab_params;
      EXPECT_EQ(p->spec.global_shape, (Shape{kOddVocab, config.hidden_size})) << p->name;
      EXPECT_EQ(p->spec.offset, mine.offset) << p->name;
      EXPECT_EQ(p->value.shape(), (Shape{mine.length, config.hidden_size})) << p->name;
    }
    EXPECT_EQ(vocab_params, tied ? 1 : 2);
    // The blocks tile [0, 97): their rows add up to the vocabulary.
    Tensor rows = Tensor::from_ints({mine.length}, {1});
    mesh->tp().all_reduce(rows);
    EXPECT_EQ(rows.to_ints()[0], kOddVocab);
  }
}

struct EvalCase {
  bool tied;
  bool sequence_parallel;
};

class VocabPaddingEval : public ::testing::TestWithParam<EvalCase> {};

TEST_P(VocabPaddingEval, LogitsLossAndEveryGradientEqualOneRank) {
  const EvalCase c = GetParam();
  const io::ModelConfig config = odd_vocab_config(c.tied);
  const auto weights = odd_vocab_weights(config, OddVocabWeights::kRandom, 2);
  const Tensor tokens = random_ids({2, 12}, 3, kOddVocab);  // T = 12: divisible by tp 2, 3, 4
  auto one = model_with_weights(config, weights);
  const models::ForwardResult want =
      one->forward(tokens, {.keep_logits = true, .for_backward = true});
  one->backward(1.0f / static_cast<float>(want.predicted));

  auto mesh = tp_mesh();
  auto model = model_with_weights(config, weights,
                                  {.mesh = mesh.get(), .sequence_parallel = c.sequence_parallel});
  const models::ForwardResult got =
      model->forward(tokens, {.keep_logits = true, .for_backward = true});
  EXPECT_EQ(got.logits.dim(2), my_vocab(*mesh).length);  // only this rank's real ids
  EXPECT_TENSORS_CLOSE(gather_logits(*mesh, got.logits), want.logits, 1e-5);
  EXPECT_NEAR(got.loss_sum, want.loss_sum, 1e-5 * want.loss_sum);
  model->backward(1.0f / static_cast<float>(got.predicted));
  model->finish_grads();
  std::map<std::string, models::Param*> ref;
  for (models::Param* p : one->parameters()) ref[p->name] = p;
  for (models::Param* p : model->parameters()) {
    SCOPED_TRACE(p->name);
    EXPECT_TENSORS_CLOSE(models::gather_whole(p->grad, p->spec, mesh.get()), ref.at(p->name)->grad,
                         1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, VocabPaddingEval,
                         ::testing::Values(EvalCase{false, false}, EvalCase{true, false},
                                           EvalCase{false, true}),
                         [](const ::testing::TestParamInfo<EvalCase>& info) {
                           return std::string(info.param.tied ? "tied" : "untied") +
                                  (info.param.sequence_parallel ? "_sp" : "");
                         });

// `steps` AdamW steps (weight decay on), each on its own random batch [2, 8]; returns each
// step's gradient norm.
std::vector<double> train(models::CausalLM& model, comm::Communicator* tp, int steps) {
  // eps 1e-3: see cli_train_test.cc (eps 1e-8 amplifies f32 summation-order noise).
  train::AdamW adamw(model.parameters(), {.lr = 1e-2f, .eps = 1e-3f, .weight_decay = 0.1f});
  std::vector<double> norms;
  for (int step = 1; step <= steps; ++step) {
    model.zero_grad();
    const models::ForwardResult out =
        model.forward(random_ids({2, 8}, 10 + step, kOddVocab), {.for_backward = true});
    model.backward(1.0f / static_cast<float>(out.predicted));
    model.finish_grads();
    norms.push_back(adamw.clip_grad_norm(0, tp, nullptr));
    adamw.step(step);
  }
  return norms;
}

TEST(VocabPadding, AdamWStepsEqualOneRank) {
  const io::ModelConfig config = odd_vocab_config(/*tied=*/false);
  const auto weights = odd_vocab_weights(config, OddVocabWeights::kRandom, 4);
  auto one = model_with_weights(config, weights);
  const std::vector<double> want = train(*one, nullptr, 3);
  auto mesh = tp_mesh();
  auto model = model_with_weights(config, weights, {.mesh = mesh.get()});
  const std::vector<double> got = train(*model, &mesh->tp(), 3);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5 * want[i]) << "grad norm of step " << i + 1;
  }
  std::map<std::string, models::Param*> ref;
  for (models::Param* p : one->parameters()) ref[p->name] = p;
  for (models::Param* p : model->parameters()) {
    SCOPED_TRACE(p->name);
    const Tensor whole = models::gather_whole(p->value, p->spec, mesh.get());
    EXPECT_TENSORS_CLOSE(whole, ref.at(p->name)->value, 1e-5);
  }
}

TEST(VocabPadding, GreedyDecodingEqualsOneRank) {
  const io::ModelConfig config = odd_vocab_config(/*tied=*/true);
  const auto weights = odd_vocab_weights(config, OddVocabWeights::kRandom, 5);
  const std::vector<int64_t> prompt = {3, 96, 41, 7, 88};
  auto one = model_with_weights(config, weights);
  auto want = serve::generate(*one, prompt, 24, {});
  ASSERT_TRUE(want.ok()) << want.status().message();
  auto mesh = tp_mesh();
  auto model = model_with_weights(config, weights, {.mesh = mesh.get()});
  auto got = serve::generate(*model, prompt, 24, {});
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(*got, *want);
}

// The weights make every real logit negative (odd_vocab_model.h): had a padded id a logit, 0,
// it would be the argmax of every row and most of the softmax mass.
TEST(VocabPadding, PaddedIdsHaveNoLogitToWinOrToEnterTheLoss) {
  const io::ModelConfig config = odd_vocab_config(/*tied=*/false);
  const auto weights = odd_vocab_weights(config, OddVocabWeights::kPaddingWouldWin, 6);
  const Tensor tokens = random_ids({2, 12}, 7, kOddVocab);
  auto one = model_with_weights(config, weights);
  const models::ForwardResult want = one->forward(tokens, {.keep_logits = true});
  for (float v : want.logits.to_floats()) ASSERT_LT(v, 0.0f) << "the premise of this test";

  auto mesh = tp_mesh();
  auto model = model_with_weights(config, weights, {.mesh = mesh.get()});
  const models::ForwardResult got = model->forward(tokens, {.keep_logits = true});
  EXPECT_NEAR(got.loss_sum, want.loss_sum, 1e-5 * want.loss_sum);
  EXPECT_TENSORS_CLOSE(gather_logits(*mesh, got.logits), want.logits, 1e-5);

  // Decoding: the gathered logits are [B, t, V] exactly, and greedy picks the real argmax.
  auto state = model->new_inference_state(2, 12);
  const Tensor decoded = model->forward_incremental(*state, tokens);
  EXPECT_EQ(decoded.shape(), (Shape{2, 12, kOddVocab}));
  EXPECT_TENSORS_CLOSE(decoded, want.logits, 1e-5);
  const std::vector<int64_t> prompt = {5, 60, 96};
  auto greedy_one = serve::generate(*one, prompt, 16, {});
  auto greedy = serve::generate(*model, prompt, 16, {});
  ASSERT_TRUE(greedy.ok() && greedy_one.ok());
  EXPECT_EQ(*greedy, *greedy_one);
  for (int64_t id : *greedy) EXPECT_LT(id, kOddVocab);
}

// The one mesh refused: a vocabulary so small that the last rank's block would start past it,
// V <= (tp-1)^2 (each rank takes ceil(V/tp) ids). One id more fits.
TEST(VocabPadding, RefusedOnlyWhenTheLastRankWouldHoldNoId) {
  auto mesh = tp_mesh();
  const int tp = mesh->dims().tp;
  io::ModelConfig config = odd_vocab_config(false);
  config.vocab_size = (tp - 1) * (tp - 1);
  auto refused = models::CausalLM::from_config(config, 1, {.mesh = mesh.get()});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(),
            absl::StrCat("--tp ", tp, " leaves tp rank ", tp - 1, " no rows of vocab_size ",
                         config.vocab_size, " (each rank takes ceil(", config.vocab_size, "/", tp,
                         ") = ", tp - 1, " ids)"));
  config.vocab_size += 1;
  EXPECT_TRUE(models::CausalLM::from_config(config, 1, {.mesh = mesh.get()}).ok());
}

}  // namespace
}  // namespace weft::testing
