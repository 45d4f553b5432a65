// One rank's view of tensor-parallel sharding: the blocks take_shard cuts (rows, column blocks,
// from bf16 files), the specs new_sharded_param writes, the KV-head replication table, and the
// tp region's identity on one rank.
#include <gtest/gtest.h>

#include <vector>

#include "models/param_init.h"
#include "models/sharding.h"
#include "models/tp_context.h"
#include "parallel/tensor_parallel.h"
#include "tests/support/test_util.h"

namespace weft::models {
namespace {

// [4, 6] with value 10*row + column.
Tensor numbered() {
  std::vector<float> v;
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 6; ++c) v.push_back(static_cast<float>(10 * r + c));
  }
  return Tensor::from_floats(v, {4, 6});
}

TEST(ModelSharding, RowShardIsTheRowRange) {
  const Param p = new_sharded_param("w", {4, 6}, 0, {2, 1, 0});
  EXPECT_EQ(p.value.shape(), (Shape{2, 6}));
  EXPECT_EQ(p.spec.offset, 2);
  EXPECT_EQ(p.spec.group, "tp");
  const Tensor shard = take_shard(numbered(), p.spec, p.value.shape());
  EXPECT_EQ(shard.to_floats()[0], 20.0f);
  EXPECT_EQ(shard.to_floats()[11], 35.0f);
}

TEST(ModelSharding, ColumnShardCopiesEachRowsBlockFromBf16) {
  const Param p = new_sharded_param("w", {4, 6}, 1, {3, 2, 0});  // columns [4, 6)
  EXPECT_EQ(p.value.shape(), (Shape{4, 2}));
  const Tensor shard = take_shard(numbered().to_dtype(DType::kBF16), p.spec, p.value.shape());
  EXPECT_EQ(shard.dtype(), DType::kF32);
  EXPECT_EQ(shard.to_floats(), (std::vector<float>{4, 5, 14, 15, 24, 25, 34, 35}));
}

TEST(ModelSharding, OnePartIsTheWholeUnsplitTensor) {
  const Param p = new_sharded_param("w", {4, 6}, 0, {1, 0, 0});
  EXPECT_EQ(p.spec.split_dim, -1);
  EXPECT_EQ(p.value.shape(), (Shape{4, 6}));
}

TEST(ModelSharding, KvHeadsReplicateWhenTpExceedsThem) {
  // tp = 4 over 2 KV heads: ranks {0,1} hold head 0, {2,3} head 1, numbered as replicas.
  const int want_index[] = {0, 0, 1, 1}, want_replica[] = {0, 1, 0, 1};
  for (int rank = 0; rank < 4; ++rank) {
    const TpShard kv = TpContext{4, rank, nullptr}.kv(2);
    EXPECT_EQ(kv.parts, 2);
    EXPECT_EQ(kv.index, want_index[rank]);
    EXPECT_EQ(kv.replica, want_replica[rank]);
  }
  // tp = 2 over 4 KV heads: an even split.
  const TpShard even = TpContext{2, 1, nullptr}.kv(4);
  EXPECT_EQ(even.parts, 2);
  EXPECT_EQ(even.index, 1);
  EXPECT_EQ(even.replica, 0);
}

TEST(ModelSharding, RegionOnOneRankIsTheIdentity) {
  const parallel::TensorParallelRegion region(nullptr, /*sequence_parallel=*/true);
  EXPECT_FALSE(region.sequence_parallel());
  EXPECT_EQ(region.local_rows(12), 12);
  const Tensor x = numbered();
  EXPECT_EQ(region.enter(x).raw(), x.raw());
  EXPECT_EQ(region.leave(x).raw(), x.raw());
}

}  // namespace
}  // namespace weft::models
