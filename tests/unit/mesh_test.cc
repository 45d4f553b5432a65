// The rank -> group mapping, checked as tables (Megatron order: tp fastest, then sp, dp, pp).
#include "parallel/mesh.h"

#include <gtest/gtest.h>

#include "parallel/pipeline_layout.h"

namespace weft::parallel {
namespace {

using Groups = std::vector<std::vector<int>>;

// Every distinct group of kind `g`, each in group order.
Groups all_groups_of(Group g, const ParallelDims& d) {
  Groups out;
  for (int r = 0; r < d.world_size(); ++r) {
    std::vector<int> members = group_ranks(r, g, d);
    if (std::find(out.begin(), out.end(), members) == out.end()) out.push_back(members);
  }
  return out;
}

TEST(Mesh, TpDpPpTableForEightRanks) {
  const ParallelDims d = resolve_dims(8, /*tp=*/2, /*pp=*/2, /*sp=*/1, 1, 1).value();
  EXPECT_EQ(d.dp, 2);
  EXPECT_EQ(all_groups_of(Group::kTp, d), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups_of(Group::kDp, d), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups_of(Group::kPp, d), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(all_groups_of(Group::kSp, d), (Groups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(all_groups_of(Group::kTpSp, d), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups_of(Group::kDpSp, d), all_groups_of(Group::kDp, d));  // sp = 1
}

TEST(Mesh, SpSitsBetweenTpAndDp) {
  const ParallelDims d = resolve_dims(8, /*tp=*/2, /*pp=*/1, /*sp=*/2, 1, 1).value();
  EXPECT_EQ(d.dp, 2);
  EXPECT_EQ(all_groups_of(Group::kTp, d), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups_of(Group::kSp, d), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups_of(Group::kDp, d), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(all_groups_of(Group::kTpSp, d), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  // Every replica of a rank's weights: same tp coordinate, sp fastest then dp.
  EXPECT_EQ(all_groups_of(Group::kDpSp, d), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  const Coord c = coord_of(6, d);
  EXPECT_EQ(c.tp, 0);
  EXPECT_EQ(c.sp, 1);
  EXPECT_EQ(c.dp, 1);
  EXPECT_EQ(c.pp, 0);
}

TEST(Mesh, MoeFoldingViewsTheSameStageRanks) {
  // 8 ranks, tp=2, dp=4 for attention; experts: etp=1, ep=4, edp=2 over the same ranks.
  const ParallelDims d = resolve_dims(8, 2, 1, 1, /*ep=*/4, /*etp=*/1).value();
  EXPECT_EQ(d.edp(), 2);
  EXPECT_EQ(all_groups_of(Group::kEtp, d), (Groups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(all_groups_of(Group::kEp, d), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(all_groups_of(Group::kEdp, d), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  // etp=2, ep=2 on the same 8 ranks (edp=2).
  const ParallelDims e = resolve_dims(8, 2, 1, 1, /*ep=*/2, /*etp=*/2).value();
  EXPECT_EQ(all_groups_of(Group::kEtp, e), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups_of(Group::kEp, e), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups_of(Group::kEdp, e), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
}

TEST(Mesh, MoeFoldingStaysInsideAPipelineStage) {
  const ParallelDims d = resolve_dims(8, 1, /*pp=*/2, 1, /*ep=*/2, 1).value();  // dp=4
  EXPECT_EQ(all_groups_of(Group::kEp, d), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups_of(Group::kEdp, d), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
}

TEST(Mesh, UnusedDimensionsGiveSingletonGroups) {
  const ParallelDims d = resolve_dims(3, 1, 1, 1, 1, 1).value();
  EXPECT_EQ(d.dp, 3);
  EXPECT_EQ(all_groups_of(Group::kDp, d), (Groups{{0, 1, 2}}));
  EXPECT_EQ(all_groups_of(Group::kTp, d), (Groups{{0}, {1}, {2}}));
  EXPECT_EQ(all_groups_of(Group::kEdp, d), (Groups{{0, 1, 2}}));
}

TEST(Mesh, EveryRankIsInExactlyOneGroupOfEachKind) {
  for (int world : {1, 2, 4, 6, 8, 12}) {
    for (int tp : {1, 2, 3}) {
      for (int pp : {1, 2}) {
        auto d = resolve_dims(world, tp, pp, 1, 1, 1);
        if (!d.ok()) continue;
        for (Group g : kAllGroups) {
          std::vector<int> seen(world, 0);
          for (const auto& members : all_groups_of(g, *d)) {
            for (int r : members) seen[r]++;
          }
          EXPECT_EQ(seen, std::vector<int>(world, 1)) << group_name(g) << " " << d->str();
        }
      }
    }
  }
}

TEST(Mesh, ImpossibleDegreesAreRefusedWithTheirValues) {
  auto bad = resolve_dims(8, 3, 1, 1, 1, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("--tp 3"), std::string::npos);
  EXPECT_NE(std::string(bad.status().message()).find("world size 8"), std::string::npos);
  auto zero = resolve_dims(8, 1, 0, 1, 1, 1);
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(std::string(zero.status().message()).find("--pp 0"), std::string::npos);
  auto moe = resolve_dims(4, 2, 1, 1, /*ep=*/3, 1);
  ASSERT_FALSE(moe.ok());
  EXPECT_NE(std::string(moe.status().message()).find("--ep 3"), std::string::npos);
}

}  // namespace
}  // namespace weft::parallel

namespace weft::parallel {
namespace {

std::vector<std::pair<int, int>> ranges(int layers, int pp, int v, int rank) {
  const std::vector<LayerRange> chunks = stage_layers(layers, pp, v, rank).value();
  std::vector<std::pair<int, int>> out;
  for (const LayerRange& r : chunks) out.push_back({r.first, r.last});
  return out;
}

TEST(PipelineLayout, InterleavedChunksAndUnevenStages) {
  using R = std::vector<std::pair<int, int>>;
  EXPECT_EQ(ranges(8, 2, 2, 0), (R{{0, 2}, {4, 6}}));
  EXPECT_EQ(ranges(8, 2, 2, 1), (R{{2, 4}, {6, 8}}));
  EXPECT_EQ(ranges(5, 2, 1, 0), (R{{0, 3}}));  // uneven: the first stage takes the extra layer
  EXPECT_EQ(ranges(5, 2, 1, 1), (R{{3, 5}}));
  EXPECT_EQ(ranges(3, 3, 1, 2), (R{{2, 3}}));
  EXPECT_EQ(stage_layers(8, 2, 2, 1).value()[1].virtual_stage, 3);
}

TEST(PipelineLayout, EmptyStageIsRefused) {
  auto bad = stage_layers(3, 2, 2, 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("4 pipeline stages for 3 layers"),
            std::string::npos);
}

}  // namespace
}  // namespace weft::parallel
