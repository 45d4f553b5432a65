// One rank's view of tensor-parallel sharding: the blocks take_shard cuts (rows, column blocks,
// from bf16 files), the specs new_sharded_param writes, the vocabulary's padded split (any
// vocabulary over any tp), the KV-head replication table, and the tp region's identity on one
// rank.
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

TEST(ModelSharding, PaddedVocabularyBlocksHoldOnlyRealIds) {
  // 97 ids padded to 100 over tp 4: blocks of 25 from rank * 25, the last holding 22.
  const int64_t want_length[] = {25, 25, 25, 22};
  for (int rank = 0; rank < 4; ++rank) {
    const ShardExtent e = shard_extent(97, TpContext{4, rank, nullptr}.vocab());
    EXPECT_EQ(e.offset, 25 * rank);
    EXPECT_EQ(e.length, want_length[rank]);
  }
  // Any tp whose last block is not empty: the blocks tile [0, V) in order.
  for (int64_t vocab : {1, 2, 7, 97, 50257}) {
    for (int tp = 1; tp <= 16; ++tp) {
      if (shard_extent(vocab, TpContext{tp, tp - 1, nullptr}.vocab()).length <= 0) continue;
      int64_t next = 0;
      for (int rank = 0; rank < tp; ++rank) {
        const ShardExtent e = shard_extent(vocab, TpContext{tp, rank, nullptr}.vocab());
        EXPECT_EQ(e.offset, next) << vocab << " over " << tp;
        EXPECT_GT(e.length, 0) << vocab << " over " << tp;
        next += e.length;
      }
      EXPECT_EQ(next, vocab) << vocab << " over " << tp;
    }
  }
  // An even split is unchanged by the rule.
  const ShardExtent even = shard_extent(96, TpContext{4, 3, nullptr}.even());
  EXPECT_EQ(even.offset, 72);
  EXPECT_EQ(even.length, 24);
}

TEST(ModelSharding, LastVocabularyShardIsShorterAndLoadsItsRows) {
  // [7, 6] over tp 3: blocks of ceil(7/3) = 3 rows; rank 2 holds row 6 only.
  std::vector<float> v;
  for (int r = 0; r < 7; ++r) {
    for (int c = 0; c < 6; ++c) v.push_back(static_cast<float>(10 * r + c));
  }
  const Tensor whole = Tensor::from_floats(v, {7, 6});
  const Param p = new_sharded_param("embed", {7, 6}, 0, TpContext{3, 2, nullptr}.vocab());
  EXPECT_EQ(p.value.shape(), (Shape{1, 6}));
  EXPECT_EQ(p.spec.offset, 6);
  EXPECT_EQ(p.spec.global_shape, (Shape{7, 6}));
  EXPECT_EQ(take_shard(whole, p.spec, p.value.shape()).to_floats(),
            (std::vector<float>{60, 61, 62, 63, 64, 65}));
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
