// weft-mpi-ranks: 2 4
// TokenWeave in training (docs/algorithms.md "TokenWeave in training") over tp = every rank: one
// step's loss and every gradient equal Megatron-SP's (the same layout, the micro-batch not cut
// in halves) within 1e-5 relative and PyTorch's one-rank reference within its 1e-4 (the
// tolerance of tests/mpi/model_parallel_test.cc); the tp group moves exactly Megatron-SP's bytes,
// each all-gather and reduce-scatter split into one call per half; what it does not run is
// refused with the problem named.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "comm/traffic.h"
#include "models/causal_lm.h"
#include "models/sharding.h"
#include "parallel/mesh.h"
#include "runtime/io/safetensors.h"
#include "tests/support/mpi_world.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

using ::weft::testing::fixtures_dir;
using ::weft::testing::random_ids;

comm::Communicator& world() { return ::weft::testing::mpi_world(); }

std::unique_ptr<parallel::Mesh> tp_mesh() {
  auto dims = parallel::resolve_dims(world().size(), world().size(), 1, 1, 1, 1);
  WEFT_CHECK(dims.ok()) << dims.status().message();
  return parallel::Mesh::create(world(), *dims);
}

std::unique_ptr<CausalLM> load(const std::string& fixture, const parallel::Mesh& mesh,
                               bool token_weave) {
  auto model = CausalLM::from_pretrained(
      fixtures_dir() + "/models/" + fixture,
      {.mesh = &mesh, .sequence_parallel = true, .token_weave = token_weave});
  WEFT_CHECK(model.ok()) << model.status().message();
  return std::move(*model);
}

// One forward and backward of `tokens`; the summed loss.
double step(CausalLM& model, const Tensor& tokens) {
  const ForwardResult out = model.forward(tokens, {.for_backward = true});
  model.backward(1.0f / static_cast<float>(out.predicted));
  model.finish_grads();
  return out.loss_sum;
}

class TokenWeaveTraining : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenWeaveTraining, GradientsEqualMegatronSpAndTheOneRankReference) {
  const std::string fixture = GetParam();
  if (fixture == "qwen2_tied" && world().size() == 4)
    GTEST_SKIP() << "tp 4 does not divide 6 heads";
  auto mesh = tp_mesh();
  auto ref_file =
      io::SafetensorsFile::open(fixtures_dir() + "/models/" + fixture + "/reference.safetensors");
  ASSERT_TRUE(ref_file.ok()) << ref_file.status().message();
  const Tensor tokens = *(*ref_file)->get("tokens");  // [2, 12]: halves of one sequence each
  auto weave = load(fixture, *mesh, true);
  auto sp = load(fixture, *mesh, false);
  const double weave_loss = step(*weave, tokens), sp_loss = step(*sp, tokens);
  EXPECT_NEAR(weave_loss, sp_loss, 1e-5 * sp_loss);
  const double predicted = static_cast<double>(tokens.dim(0) * (tokens.dim(1) - 1));
  const double ref_loss = (*ref_file)->get_f32("loss")->item();
  EXPECT_NEAR(weave_loss / predicted, ref_loss, 1e-4 * ref_loss);
  const std::vector<Param*>& sp_params = sp->parameters();
  for (size_t i = 0; i < sp_params.size(); ++i) {
    const Param& p = *weave->parameters()[i];
    SCOPED_TRACE(p.name);
    EXPECT_TENSORS_CLOSE(p.grad, sp_params[i]->grad, 1e-5);
    EXPECT_TENSORS_CLOSE(gather_whole(p.grad, p.spec, mesh.get()),
                         *(*ref_file)->get_f32("grad." + p.name), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenWeaveTraining,
                         ::testing::Values("llama_gqa", "qwen2_tied", "hybrid_linear"));

// The bytes of Megatron-SP (tests/mpi/model_parallel_test.cc, TpBytesEqualTheMegatronFormula):
// N = B*T rows of D f32, L layers; 2(2L+1) row all-gathers and as many reduce-scatters (the
// embedding, each layer's two tp regions forward and backward, the head's input), now one per
// half of N/2 rows each; all-reduces of the cross-entropy's three [N] vectors and of the packed
// norm gradients (2L+1 vectors of D), plus the KV-head copies' k/v gradients when tp > Hkv.
TEST(TokenWeaveTraffic, MegatronSpBytesInTwiceTheCalls) {
  const int p = world().size();
  auto mesh = tp_mesh();
  auto model = load("llama_gqa", *mesh, true);
  const io::ModelConfig& c = model->config();
  const Tensor tokens = random_ids({4, 4 * p}, 11, c.vocab_size);
  const int64_t n = tokens.numel(), d = c.hidden_size, layers = c.num_hidden_layers;
  mesh->tp().reset_stats();
  step(*model, tokens);
  auto bus = [&](const std::string& kind, int64_t bytes) {
    return comm::bus_bytes(kind, bytes, p);
  };
  const int64_t rows = 2 * (2 * layers + 1), row = n * d * 4;
  const int copies = p > c.num_key_value_heads ? static_cast<int>(p / c.num_key_value_heads) : 1;
  const int64_t kv_grads = 2 * layers * c.head_dim * d * 4;  // k_proj and v_proj, one KV head
  std::map<std::string, comm::CallStats> expected;
  expected["all_gather"] = {2 * rows, rows * bus("all_gather", row)};
  expected["reduce_scatter"] = {2 * rows, rows * bus("reduce_scatter", row)};
  expected["all_reduce"] = {4 + (copies > 1 ? 1 : 0),
                            3 * bus("all_reduce", n * 4) +
                                bus("all_reduce", (2 * layers + 1) * d * 4) +
                                (copies > 1 ? comm::bus_bytes("all_reduce", kv_grads, copies) : 0)};
  const std::map<std::string, comm::CallStats> got = mesh->tp().stats();
  ::weft::testing::expect_call_stats(got, expected);
  // One all-reduce's bus bytes per all-gather + reduce-scatter pair of rows.
  EXPECT_EQ(got.at("all_gather").bytes_sent + got.at("reduce_scatter").bytes_sent,
            rows * bus("all_reduce", row));
}

TEST(TokenWeaveRefusals, WhatTheHalvesCannotRunIsRefused) {
  const int p = world().size();
  auto tp = tp_mesh();
  auto one = parallel::Mesh::create(world(), *parallel::resolve_dims(p, 1, 1, 1, 1, 1));
  auto pipe = parallel::Mesh::create(world(), *parallel::resolve_dims(p, p / 2, 2, 1, 1, 1));
  const ParallelOptions weave{.mesh = tp.get(), .sequence_parallel = true, .token_weave = true};
  auto with = [&](auto change) {
    ParallelOptions o = weave;
    change(o);
    return o;
  };
  for (const auto& [fixture, options, message] :
       std::vector<std::tuple<std::string, ParallelOptions, std::string>>{
           {"llama_gqa", with([&](ParallelOptions& o) { o.mesh = one.get(); }),
            "--token-weave needs --tp 2 or more: it overlaps the tensor-parallel collectives with "
            "compute, and --tp 1 has none"},
           {"mixtral_moe", weave,
            "--token-weave trains dense models only: an MoE layer's routing (expert capacity, "
            "load-balancing loss) spans the whole micro-batch, which TokenWeave runs as two "
            "halves"},
           {"llama_gqa", with([](ParallelOptions& o) { o.streambp = 4; }),
            "--token-weave with --streambp: both reorder every layer's backward; choose one"},
           {"llama_gqa", with([](ParallelOptions& o) { o.seco = 4; }),
            "--token-weave with --seco: both reorder every layer's backward; choose one"},
           {"llama_gqa", with([](ParallelOptions& o) { o.recompute = Recompute::kFull; }),
            "--token-weave with --recompute full: TokenWeave keeps every layer's activations of "
            "both halves; use --recompute selective or none"},
           {"llama_gqa", with([&](ParallelOptions& o) { o.mesh = pipe.get(); }),
            p == 2 ? "--token-weave needs --tp 2 or more: it overlaps the tensor-parallel "
                     "collectives with compute, and --tp 1 has none"
                   : "--token-weave runs over tp alone (got --pp 2 --ep 1 --etp 1 --sp 1)"}}) {
    SCOPED_TRACE(message);
    auto model = CausalLM::from_pretrained(fixtures_dir() + "/models/" + fixture, options);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().message(), message);
  }
}

}  // namespace
}  // namespace weft::models
