// hf_weight_shapes(config) — the list that model directories are checked against before any
// allocation and that offline resharding cuts tensors by — names exactly the parameters a built
// model holds, with their global shapes, for every fixture (dense, tied, MoE, linear-attention
// hybrid), and the tp split each rank of a tp 2 or tp 4 model holds.
#include <gtest/gtest.h>

#include <map>

#include "models/causal_lm.h"
#include "models/decoder_block.h"
#include "models/embedding.h"
#include "models/lm_head.h"
#include "models/weight_shapes.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

TEST(WeightShapes, EqualTheBuiltModelsParametersForEveryFixture) {
  for (const char* name : {"llama_gqa", "qwen2_tied", "mixtral_moe", "hybrid_linear"}) {
    SCOPED_TRACE(name);
    const std::string dir = testing::fixtures_dir() + "/models/" + name;
    auto model = CausalLM::from_pretrained(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    std::map<std::string, Shape> built;
    for (const Param* p : (*model)->parameters()) built[p->name] = p->spec.global_shape;
    std::map<std::string, Shape> listed;
    for (const WeightShape& w : hf_weight_shapes((*model)->config())) listed[w.name] = w.shape;
    EXPECT_EQ(listed, built);
  }
}

// The block a rank of `tp` holds of a tensor split as `w` says, as TpContext cuts it (an expert
// of a model without ep or etp splits over tp evenly).
ShardExtent block_of(const WeightShape& w, const TpContext& tp, int64_t kv_heads) {
  const int64_t size = w.shape[w.split_dim];
  switch (w.split) {
    case TpSplit::kVocab:
      return shard_extent(size, tp.vocab());
    case TpSplit::kKvHeads:
      return shard_extent(size, tp.kv(kv_heads));
    default:
      return shard_extent(size, tp.even());
  }
}

// One tp rank's layers, built without a mesh (their constructors read TpContext's size and rank
// only): every parameter's split dimension and offset follow the listed split.
TEST(WeightShapes, TheListedSplitIsTheBuiltShardOfEveryTpRank) {
  for (const char* name : {"llama_gqa", "qwen2_tied", "mixtral_moe", "hybrid_linear"}) {
    const absl::StatusOr<io::ModelConfig> config =
        io::load_model_config(testing::fixtures_dir() + "/models/" + name);
    ASSERT_TRUE(config.ok()) << config.status();
    std::map<std::string, WeightShape> listed;
    for (const WeightShape& w : hf_weight_shapes(*config)) listed[w.name] = w;
    for (const int size : {2, 4}) {
      for (const int rank : {0, 1, size - 1}) {
        SCOPED_TRACE(::testing::Message() << name << " tp " << size << " rank " << rank);
        const TpContext tp{size, rank, nullptr};
        Embedding embedding(config->vocab_size, config->hidden_size, tp.vocab());
        LmHead head(config->vocab_size, config->hidden_size, tp.vocab(),
                    config->tie_word_embeddings ? LmHead::Weight::kTied : LmHead::Weight::kOwn,
                    &embedding.table());
        std::vector<std::unique_ptr<DecoderBlock>> blocks;
        std::vector<Param*> params;
        embedding.collect_params(params);
        head.collect_params(params);
        for (int64_t layer = 0; layer < config->num_hidden_layers; ++layer) {
          blocks.push_back(
              std::make_unique<DecoderBlock>(*config, layer, tp, SpContext{}, ExpertContext{}));
          blocks.back()->collect_params(params);
        }
        for (const Param* p : params) {
          const WeightShape& w = listed.at(p->name);
          SCOPED_TRACE(p->name);
          EXPECT_EQ(p->spec.split_dim, w.split_dim);
          if (w.split == TpSplit::kNone) continue;
          EXPECT_EQ(p->spec.group, "tp");
          EXPECT_EQ(p->spec.offset, block_of(w, tp, config->num_key_value_heads).offset);
        }
      }
    }
  }
}

}  // namespace
}  // namespace weft::models
