// weft-mpi-ranks: 2 4
// The model family under tensor parallelism (with and without Megatron sequence parallelism) and
// split into pipeline chunks equals the one-rank model: for every fixture, the loss, the logits
// (vocabulary shards gathered) and every gradient (shards gathered) match the PyTorch reference;
// interleaved chunks match a one-rank model; impossible meshes are refused with the flag named.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/traffic.h"
#include "kernels/ops.h"
#include "models/causal_lm.h"
#include "models/sharding.h"
#include "models/tp_context.h"
#include "parallel/mesh.h"
#include "parallel/shard_gather.h"
#include "runtime/io/safetensors.h"
#include "tests/support/mpi_world.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

using ::weft::testing::fixtures_dir;
using ::weft::testing::random_ids;
using ::weft::testing::random_tensor;

comm::Communicator& world() { return ::weft::testing::mpi_world(); }

std::unique_ptr<parallel::Mesh> make_mesh(int tp, int pp) {
  auto dims = parallel::resolve_dims(world().size(), tp, pp, 1, 1, 1);
  WEFT_CHECK(dims.ok()) << dims.status().message();
  return parallel::Mesh::create(world(), *dims);
}

struct Reference {
  std::shared_ptr<io::SafetensorsFile> file;
  Tensor get(const std::string& name) const {
    auto t = file->get(name);
    WEFT_CHECK(t.ok()) << t.status().message();
    return t->dtype() == DType::kI64 ? *t : *file->get_f32(name);
  }
};

Reference load_reference(const std::string& fixture) {
  auto file =
      io::SafetensorsFile::open(fixtures_dir() + "/models/" + fixture + "/reference.safetensors");
  WEFT_CHECK(file.ok()) << file.status().message();
  return {std::move(*file)};
}

// One training step as a pipeline would run it, in the simplest order: every micro-batch's
// forward through the virtual stages (activations sent over pp), then every backward in reverse,
// then finish_grads. Returns the summed loss of the step, known on every rank.
double run_step(CausalLM& model, const parallel::Mesh& mesh, const Tensor& tokens, int microbatches,
                bool sequence_parallel) {
  comm::Communicator& pp = mesh.pp();
  const int stages = model.num_chunks() * pp.size();
  const int64_t b = tokens.dim(0) / microbatches, t = tokens.dim(1);
  const int64_t rows_t = sequence_parallel ? t / mesh.dims().tp : t;
  const Shape activation = {b, rows_t, model.config().hidden_size};
  const float scale = 1.0f / static_cast<float>(tokens.dim(0) * (t - 1));
  std::vector<std::vector<std::unique_ptr<ChunkState>>> states(microbatches);
  double loss = 0;
  for (int m = 0; m < microbatches; ++m) {
    const Tensor mb = tokens.slice(m * b, (m + 1) * b);  // the micro-batch's sequences
    Tensor carried;  // the output of the previous stage when it ran on this rank
    for (int s = 0; s < stages; ++s) {
      if (s % pp.size() != pp.rank()) continue;
      const int chunk = s / pp.size();
      Tensor input = carried;
      if (s > 0 && pp.size() > 1) {
        input = Tensor::empty(activation);
        pp.recv(input, (s - 1) % pp.size(), m * stages + s);
      }
      states[m].push_back(model.new_chunk_state());
      double chunk_loss = 0;
      carried = model.forward_chunk(chunk, mb, input, *states[m].back(), &chunk_loss);
      loss += chunk_loss;
      if (s + 1 < stages && pp.size() > 1)
        pp.send(carried, (s + 1) % pp.size(), m * stages + s + 1);
    }
  }
  for (int m = 0; m < microbatches; ++m) {
    Tensor carried;  // the gradient from the next stage when it ran on this rank
    for (int s = stages - 1; s >= 0; --s) {
      if (s % pp.size() != pp.rank()) continue;
      const int chunk = s / pp.size();
      Tensor dout = carried;
      if (s + 1 < stages && pp.size() > 1) {
        dout = Tensor::empty(activation);
        pp.recv(dout, (s + 1) % pp.size(), m * stages + s);
      }
      carried = model.backward_chunk(chunk, *states[m][chunk], dout, scale, m == microbatches - 1);
      states[m][chunk].reset();
      if (s > 0 && pp.size() > 1) pp.send(carried, (s - 1) % pp.size(), m * stages + s - 1);
    }
  }
  model.finish_grads();
  Tensor total = Tensor::from_floats({static_cast<float>(loss)}, {1});
  pp.all_reduce(total);  // only the last stage holds the loss
  return total.item();
}

// Every parameter's gradient, gathered to its whole shape, equals `expected(name)`.
template <typename Expected>
void expect_grads(CausalLM& model, const parallel::Mesh& mesh, Expected expected, double tol) {
  for (Param* p : model.parameters()) {
    SCOPED_TRACE(p->name);
    const Tensor whole = gather_whole(p->grad, p->spec, &mesh);
    EXPECT_TENSORS_CLOSE(whole, expected(p->name), tol);
  }
}

struct Case {
  std::string fixture;
  int tp;
  int pp;
  bool sequence_parallel;
};

std::string case_name(const Case& c) {
  return c.fixture + " tp=" + std::to_string(c.tp) + " pp=" + std::to_string(c.pp) +
         (c.sequence_parallel ? " sp" : "");
}

// Runs `c` on the fixture and compares loss, logits (pp = 1) and every gradient with PyTorch.
void expect_matches_reference(const Case& c) {
  SCOPED_TRACE(case_name(c));
  auto mesh = make_mesh(c.tp, c.pp);
  auto loaded = CausalLM::from_pretrained(fixtures_dir() + "/models/" + c.fixture,
                                          {mesh.get(), c.sequence_parallel, 1});
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  CausalLM& model = **loaded;
  const Reference ref = load_reference(c.fixture);
  const Tensor tokens = ref.get("tokens");  // [2, 12]
  ASSERT_TRUE(model.check_batch(tokens).ok());
  const double ref_loss = ref.get("loss").item();
  const int64_t predicted = tokens.dim(0) * (tokens.dim(1) - 1);

  if (c.pp == 1) {
    const ForwardResult out = model.forward(tokens, {.keep_logits = true, .for_backward = true});
    EXPECT_NEAR(out.loss_sum / predicted, ref_loss, 1e-4 * ref_loss);
    const int64_t v = model.config().vocab_size;
    const ShardExtent block = shard_extent(v, TpContext{c.tp, mesh->coord().tp}.vocab());
    EXPECT_EQ(out.logits.dim(2), block.length);  // each rank holds only its vocabulary block
    const Tensor logits = parallel::gather_shards(mesh->tp(), out.logits, 2, block.offset,
                                                  {tokens.dim(0), tokens.dim(1), v});
    EXPECT_TENSORS_CLOSE(logits, ref.get("logits"), 1e-4);
    model.backward(1.0f / static_cast<float>(predicted));
    model.finish_grads();
  } else {
    const double loss = run_step(model, *mesh, tokens, 2, c.sequence_parallel);
    EXPECT_NEAR(loss / predicted, ref_loss, 1e-4 * ref_loss);
  }
  expect_grads(
      model, *mesh, [&](const std::string& name) { return ref.get("grad." + name); }, 1e-4);
}

// Positions [begin, end) of a [B, T, ...] tensor (i64 tokens or f32 logits).
Tensor positions(const Tensor& x, int64_t begin, int64_t end) {
  const int64_t b = x.dim(0), t = x.dim(1), row = x.numel() / (b * t);
  Shape shape = x.shape();
  shape[1] = end - begin;
  Tensor out = Tensor::empty(shape, x.dtype());
  const Tensor flat = x.view({b * t, row});
  Tensor out_flat = out.view({b * (end - begin), row});
  for (int64_t i = 0; i < b; ++i) {
    out_flat.slice(i * (end - begin), (i + 1) * (end - begin))
        .copy_from(flat.slice(i * t + begin, i * t + end));
  }
  return out;
}

TEST(ModelParallelDecoding, IncrementalLogitsUnderTpEqualReference) {
  auto mesh = make_mesh(world().size(), 1);
  auto model = CausalLM::from_pretrained(fixtures_dir() + "/models/hybrid_linear",
                                         {mesh.get(), /*sequence_parallel=*/true, 1});
  ASSERT_TRUE(model.ok()) << model.status().message();
  const Reference ref = load_reference("hybrid_linear");
  const Tensor tokens = ref.get("tokens");  // [2, 12]
  auto state = (*model)->new_inference_state(2, 12);
  // A prefill of 7 positions (not divisible by tp: decoding runs plain tp), then the other 5.
  for (const auto& [begin, end] : {std::pair<int64_t, int64_t>{0, 7}, {7, 12}}) {
    const Tensor logits = (*model)->forward_incremental(*state, positions(tokens, begin, end));
    EXPECT_TENSORS_CLOSE(logits, positions(ref.get("logits"), begin, end), 1e-4);
  }
}

class ModelParallel : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelParallel, TensorParallelMatchesReferenceWithAndWithoutSequenceParallelism) {
  for (int tp = 2; tp <= world().size(); tp *= 2) {
    const std::string fixture = GetParam();
    if (fixture == "qwen2_tied" && tp == 4) {
      auto mesh = make_mesh(4, 1);
      auto refused =
          CausalLM::from_pretrained(fixtures_dir() + "/models/" + fixture, {mesh.get(), false, 1});
      ASSERT_FALSE(refused.ok());
      EXPECT_EQ(refused.status().message(), "--tp 4 does not divide num_attention_heads 6");
      continue;
    }
    for (bool sp : {false, true}) expect_matches_reference({fixture, tp, 1, sp});
  }
}

TEST_P(ModelParallel, PipelineOfTwoStagesComposedWithTpMatchesReference) {
  const int tp = world().size() / 2;
  for (bool sp : {false, true}) {
    if (sp && tp == 1) continue;
    expect_matches_reference({GetParam(), tp, 2, sp});
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelParallel,
                         ::testing::Values("llama_gqa", "qwen2_tied", "mixtral_moe",
                                           "hybrid_linear"));

io::ModelConfig four_layer_config() {
  io::ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";  // q/k/v biases
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  return c;
}

TEST(ModelParallelChunks, InterleavedChunksAndTiedEmbeddingsMatchOneRank) {
  const io::ModelConfig config = four_layer_config();
  // The one-rank model, with O(1) weights so that every gradient is well above rounding.
  auto whole = CausalLM::from_config(config, 3);
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  std::map<std::string, Param*> by_name;
  uint64_t seed = 50;
  for (Param* p : (*whole)->parameters()) {
    p->value = random_tensor(p->value.shape(), ++seed, -0.4f, 0.4f);
    by_name[p->name] = p;
  }
  const Tensor tokens = random_ids({4, 8}, 9, config.vocab_size);
  const ForwardResult ref = (*whole)->forward(tokens, {.for_backward = true});
  const int64_t predicted = ref.predicted;
  (*whole)->backward(1.0f / static_cast<float>(predicted));

  const int tp = world().size() / 2;
  for (bool sp : {false, true}) {
    if (sp && tp == 1) continue;
    SCOPED_TRACE(sp ? "sequence parallel" : "plain tp");
    auto mesh = make_mesh(tp, 2);
    auto loaded = CausalLM::from_config(config, 3, {mesh.get(), sp, /*pp_virtual=*/2});
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    CausalLM& model = **loaded;
    ASSERT_EQ(model.num_chunks(), 2);
    EXPECT_EQ(model.is_first_stage(0), mesh->coord().pp == 0);
    EXPECT_EQ(model.is_last_stage(1), mesh->coord().pp == 1);
    for (Param* p : model.parameters()) {
      p->value = take_shard(by_name.at(p->name)->value, p->spec, p->value.shape());
    }
    // The hook sees every parameter once, when its gradient is final.
    std::map<std::string, Tensor> at_hook;
    model.set_grad_ready_hook([&](Param& p) {
      EXPECT_EQ(at_hook.count(p.name), 0u) << p.name << " reported twice";
      at_hook[p.name] = p.grad.clone();
    });
    const double loss = run_step(model, *mesh, tokens, 2, sp);
    EXPECT_NEAR(loss, ref.loss_sum, 1e-5 * ref.loss_sum);
    expect_grads(
        model, *mesh, [&](const std::string& name) { return by_name.at(name)->grad; }, 1e-5);
    EXPECT_EQ(at_hook.size(), model.parameters().size());
    for (Param* p : model.parameters()) {
      ASSERT_EQ(at_hook.count(p->name), 1u) << p->name << " never reported";
      EXPECT_TENSORS_CLOSE(at_hook[p->name], p->grad, 0.0);
    }
  }
}

// from_config on a tp = world mesh with `edit` applied to a valid tiny config: the error.
std::string refusal(const std::function<void(io::ModelConfig&)>& edit) {
  io::ModelConfig c = four_layer_config();
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.intermediate_size = 32;
  edit(c);
  auto mesh = make_mesh(world().size(), 1);
  auto model = CausalLM::from_config(c, 1, {mesh.get(), false, 1});
  return model.ok() ? "accepted" : std::string(model.status().message());
}

TEST(ModelParallelRefusals, ImpossibleMeshesAreRefusedNamingFlagAndValue) {
  const int w = world().size();
  const std::string tp = "--tp " + std::to_string(w);
  EXPECT_EQ(refusal([&](io::ModelConfig& c) {
              c.num_attention_heads = 3 * w / 2;
              c.num_key_value_heads = 1;
            }),
            tp + " does not divide num_attention_heads " + std::to_string(3 * w / 2));
  const std::string kv = refusal([](io::ModelConfig& c) {
    c.num_attention_heads = 12;
    c.num_key_value_heads = 3;
  });
  EXPECT_EQ(kv, w == 2 ? "--tp 2 does not divide num_key_value_heads 3"
                       : "--tp 4 exceeds num_key_value_heads 3 and is not a multiple of it (KV "
                         "heads are replicated tp/kv times)");
  EXPECT_EQ(refusal([](io::ModelConfig& c) { c.intermediate_size = 41; }),
            tp + " does not divide intermediate_size 41");
  // Any vocabulary fits (padded to a multiple of tp; tests/mpi/vocab_padding_test.cc).
  EXPECT_EQ(refusal([](io::ModelConfig& c) { c.vocab_size = 41; }), "accepted");
  EXPECT_EQ(refusal([](io::ModelConfig& c) {
              c.architecture = "MixtralForCausalLM";
              c.tie_word_embeddings = false;
              c.num_local_experts = 4;
              c.num_experts_per_tok = 2;
              c.intermediate_size = 41;
            }),
            tp + " does not divide the experts' intermediate_size 41");

  auto pipe = make_mesh(1, 2);
  auto two_layers = CausalLM::from_pretrained(fixtures_dir() + "/models/llama_gqa",
                                              {pipe.get(), false, /*pp_virtual=*/2});
  ASSERT_FALSE(two_layers.ok());
  EXPECT_EQ(two_layers.status().message(),
            "--pp 2 x --pp-virtual 2 = 4 pipeline stages for 2 layers: a stage would be empty");
}

TEST(ModelParallelRefusals, SequenceNotDivisibleByTpIsAStatusError) {
  const int w = world().size();
  auto mesh = make_mesh(w, 1);
  auto model = CausalLM::from_pretrained(fixtures_dir() + "/models/llama_gqa",
                                         {mesh.get(), /*sequence_parallel=*/true, 1});
  ASSERT_TRUE(model.ok()) << model.status().message();
  const Tensor tokens = random_ids({2, 2 * w + 1}, 4, 96);
  const absl::Status status = (*model)->check_batch(tokens);
  EXPECT_EQ(status.message(), "sequence length " + std::to_string(2 * w + 1) +
                                  " is not divisible by --tp " + std::to_string(w) +
                                  " (--sequence-parallel splits each sequence over tp)");
  EXPECT_TRUE((*model)->check_batch(random_ids({2, 2 * w}, 4, 96)).ok());
}

// Communicated bytes equal the formula (docs/algorithms.md "Tensor parallelism"): one training step
// of a dense Llama over tp = P ranks, N = B*T tokens, hidden D, L layers, f32 rows of N*D*4
// bytes. Plain tp all-reduces a row after the embedding, after each attention and MLP (2L), and
// the head's input gradient and each block's two input gradients in the backward (1 + 2L); the
// cross-entropy all-reduces three [N] vectors (row max, sum of exponentials, target logit).
// Sequence parallelism turns each row all-reduce into a reduce-scatter and adds an all-gather
// before each column-parallel entry and in each backward leave: 2(2L+1) of each, the same bus
// bytes as plain tp, plus one all-reduce of the packed norm gradients (2L+1 vectors of D).
// When tp exceeds the KV heads (Hkv = 2 here, tp = 4), the tp/Hkv ranks sharing a KV head sum
// their k/v projection grads in one packed all-reduce over their sub-group, counted in tp too.
TEST(ModelParallelTraffic, TpBytesEqualTheMegatronFormula) {
  const int p = world().size();
  for (bool sp : {false, true}) {
    SCOPED_TRACE(sp ? "sequence parallel" : "plain tp");
    auto mesh = make_mesh(p, 1);
    auto loaded =
        CausalLM::from_pretrained(fixtures_dir() + "/models/llama_gqa", {mesh.get(), sp, 1});
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    CausalLM& model = **loaded;
    const Tensor tokens = random_ids({2, 4 * p}, 11, model.config().vocab_size);
    const int64_t n = tokens.numel(), d = model.config().hidden_size;
    const int64_t layers = model.config().num_hidden_layers;
    const int64_t row = n * d * 4, small = n * 4;
    mesh->tp().reset_stats();
    const ForwardResult out = model.forward(tokens, {.for_backward = true});
    model.backward(1.0f / static_cast<float>(out.predicted));
    model.finish_grads();

    auto bus = [&](const std::string& kind, int64_t bytes) {
      return comm::bus_bytes(kind, bytes, p);
    };
    std::map<std::string, comm::CallStats> expected;
    const int64_t kv_heads = model.config().num_key_value_heads;
    const int copies = p > kv_heads ? static_cast<int>(p / kv_heads) : 1;
    // k_proj and v_proj of every layer: one KV head each, [head_dim, D].
    const int64_t kv_grads = 2 * layers * model.config().head_dim * d * 4;
    const comm::CallStats kv_copies = {
        copies > 1 ? 1 : 0, copies > 1 ? comm::bus_bytes("all_reduce", kv_grads, copies) : 0};
    if (!sp) {
      expected["all_reduce"] = {2 + 4 * layers + 3 + kv_copies.calls,
                                (2 + 4 * layers) * bus("all_reduce", row) +
                                    3 * bus("all_reduce", small) + kv_copies.bytes_sent};
    } else {
      const int64_t rows = 2 * (2 * layers + 1);
      expected["all_gather"] = {rows, rows * bus("all_gather", row)};
      expected["reduce_scatter"] = {rows, rows * bus("reduce_scatter", row)};
      expected["all_reduce"] = {4 + kv_copies.calls,
                                3 * bus("all_reduce", small) +
                                    bus("all_reduce", (2 * layers + 1) * d * 4) +
                                    kv_copies.bytes_sent};
    }
    const std::map<std::string, comm::CallStats> got = mesh->tp().stats();
    ::weft::testing::expect_call_stats(got, expected);
    if (sp) {  // the same bus bytes for the rows as plain tp
      EXPECT_EQ(got.at("all_gather").bytes_sent + got.at("reduce_scatter").bytes_sent,
                (4 * layers + 2) * 2 * bus("reduce_scatter", row));
    }
  }
}

}  // namespace
}  // namespace weft::models
