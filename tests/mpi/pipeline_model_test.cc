// weft-mpi-ranks: 2 4
// The pipeline executor on the real CausalLM: the llama_gqa fixture (2 layers) at pp=2 under
// 1F1B; a 4-layer model from its config at pp=2 x v=2 (interleaved) and at pp=4; with 4 ranks
// also tp=2 x pp=2, with and without sequence parallelism. The summed loss and every gradient
// (tp shards gathered; each parameter on one pp rank) equal one rank running the whole batch
// through forward()/backward().
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/mpi_communicator.h"
#include "models/causal_lm.h"
#include "parallel/mesh.h"
#include "parallel/shard_gather.h"
#include "runtime/core/check.h"
#include "runtime/io/model_config.h"
#include "runtime/train/pipeline_executor.h"
#include "tests/support/test_util.h"

namespace weft::train {
namespace {

constexpr int64_t kMicroBatch = 2;
constexpr int64_t kSeqLen = 8;

std::string fixture() { return testing::fixtures_dir() + "/models/llama_gqa"; }

// The fixture's config with `layers` layers, for from_config.
io::ModelConfig config_with_layers(int layers) {
  absl::StatusOr<io::ModelConfig> config = io::load_model_config(fixture());
  WEFT_CHECK(config.ok()) << config.status();
  config->num_hidden_layers = layers;
  config->layer_types.assign(layers, io::LayerType::kFullAttention);
  config->json = io::model_config_to_json(*config);
  return *config;
}

// Whole-model weights: the fixture's (layers = 0) or random ones from seed 7.
std::unique_ptr<models::CausalLM> load(int layers, const models::ParallelOptions& parallel) {
  absl::StatusOr<std::unique_ptr<models::CausalLM>> model =
      layers == 0 ? models::CausalLM::from_pretrained(fixture(), parallel)
                  : models::CausalLM::from_config(config_with_layers(layers), 7, parallel);
  WEFT_CHECK(model.ok()) << model.status();
  return std::move(*model);
}

// The whole gradient of `p`: tp shards gathered (pp ranks hold whole parameters).
Tensor whole_grad(const models::Param& p, const parallel::Mesh& mesh) {
  if (p.spec.split_dim < 0) return p.grad;
  WEFT_CHECK(p.spec.group == "tp") << p.name << " is split over " << p.spec.group;
  return parallel::gather_shards(mesh.tp(), p.grad, p.spec.split_dim, p.spec.offset,
                                 p.spec.global_shape);
}

struct Case {
  int layers = 0;  // 0: the llama_gqa fixture's weights
  int tp = 1;
  int pp = 2;
  int v = 1;
  int m = 4;
  bool sequence_parallel = false;
};

void expect_pipeline_matches_one_rank(const Case& c) {
  auto world = comm::mpi_world_communicator();
  if (world->size() % (c.tp * c.pp) != 0) {
    GTEST_SKIP() << "tp " << c.tp << " x pp " << c.pp << " needs a multiple of ranks";
  }
  auto dims = parallel::resolve_dims(world->size(), c.tp, c.pp, 1, 1, 1);
  ASSERT_TRUE(dims.ok()) << dims.status();
  auto mesh = parallel::Mesh::create(*world, *dims);
  const int layers = c.layers, v = c.v, m = c.m;
  SCOPED_TRACE(::testing::Message()
               << "layers=" << layers << " tp=" << c.tp << " pp=" << c.pp << " v=" << v
               << " m=" << m << " sp=" << c.sequence_parallel << " rank=" << mesh->rank());

  std::unique_ptr<models::CausalLM> one = load(layers, {});
  const int64_t vocab = one->config().vocab_size;
  // The dp group's batch; micro-batch k is its rows [k*b, (k+1)*b).
  const Tensor batch =
      testing::random_ids({m * kMicroBatch, kSeqLen}, 100 + mesh->coord().dp, vocab);
  std::vector<Tensor> micro_batches;
  for (int k = 0; k < m; ++k) {
    micro_batches.push_back(batch.slice(k * kMicroBatch, (k + 1) * kMicroBatch));
  }
  one->zero_grad();
  const models::ForwardResult want = one->forward(batch, {.for_backward = true});
  const float loss_scale = 1.0f / static_cast<float>(want.predicted);
  one->backward(loss_scale);

  std::unique_ptr<models::CausalLM> piped =
      load(layers, {.mesh = mesh.get(), .sequence_parallel = c.sequence_parallel, .pp_virtual = v});
  ASSERT_EQ(piped->num_chunks(), v);
  piped->zero_grad();
  auto got =
      run_pipeline_step(*piped, mesh.get(), micro_batches,
                        {.loss_scale = loss_scale});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_NEAR(got->loss_sum, want.loss_sum, 1e-5 * want.loss_sum);

  std::map<std::string, const models::Param*> reference;
  for (const models::Param* p : one->parameters()) reference[p->name] = p;
  for (const models::Param* p : piped->parameters()) {
    ASSERT_TRUE(reference.count(p->name)) << p->name;
    EXPECT_TENSORS_CLOSE(whole_grad(*p, *mesh), reference[p->name]->grad, 1e-5) << p->name;
  }
  // Between them the pp ranks hold every parameter once.
  Tensor held = Tensor::from_floats({static_cast<float>(piped->parameters().size())}, {1});
  mesh->pp().all_reduce(held);
  EXPECT_EQ(held.to_floats()[0], static_cast<float>(reference.size()));
}

TEST(PipelineModel, LlamaFixtureOneFOneBMatchesOneRank) {
  expect_pipeline_matches_one_rank({.layers = 0, .pp = 2});
}

TEST(PipelineModel, FourLayersInterleavedMatchesOneRank) {
  expect_pipeline_matches_one_rank({.layers = 4, .pp = 2, .v = 2});
}

TEST(PipelineModel, FourLayersFourStagesMatchesOneRank) {
  expect_pipeline_matches_one_rank({.layers = 4, .pp = 4, .m = 8});
}

// Activations cross stages as [b, T/tp, hidden] under sequence parallelism.
TEST(PipelineModel, LlamaFixtureWithTensorAndSequenceParallelMatchesOneRank) {
  expect_pipeline_matches_one_rank({.layers = 0, .tp = 2, .pp = 2, .sequence_parallel = true});
}

TEST(PipelineModel, FourLayersInterleavedWithTensorParallelMatchesOneRank) {
  expect_pipeline_matches_one_rank({.layers = 4, .tp = 2, .pp = 2, .v = 2});
}

}  // namespace
}  // namespace weft::train
