// hf_weight_shapes(config) — the list that model directories are checked against before any
// allocation — names exactly the parameters a built model holds, with their global shapes, for
// every fixture (dense, tied, MoE, linear-attention hybrid).
#include <gtest/gtest.h>

#include <map>

#include "models/causal_lm.h"
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

}  // namespace
}  // namespace weft::models
