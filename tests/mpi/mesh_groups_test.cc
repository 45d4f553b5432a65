// weft-mpi-ranks: 4 8
// Mesh::create builds real communicators whose members are the table's groups.
#include <gtest/gtest.h>

#include "comm/mpi_communicator.h"
#include "parallel/mesh.h"

namespace weft::parallel {
namespace {

TEST(MeshGroups, CommunicatorsHoldTheTablesRanks) {
  auto world = comm::mpi_world_communicator();
  const int n = world->size();
  for (int tp : {1, 2}) {
    for (int pp : {1, 2}) {
      const ParallelDims dims = resolve_dims(n, tp, pp, 1, /*ep=*/n / (tp * pp) >= 2 ? 2 : 1, 1).value();
      auto mesh = Mesh::create(*world, dims);
      for (Group g : kAllGroups) {
        SCOPED_TRACE(std::string(group_name(g)) + " " + dims.str());
        comm::Communicator& c = mesh->group(g);
        const std::vector<int> want = group_ranks(world->rank(), g, dims);
        ASSERT_EQ(c.size(), static_cast<int>(want.size()));
        EXPECT_EQ(want[c.rank()], world->rank());
        // Gathering world ranks through the group gives the table's members in order.
        Tensor mine = Tensor::from_ints({world->rank()}, {1});
        Tensor all = Tensor::empty({c.size()}, DType::kI64);
        c.all_gather(mine, all);
        EXPECT_EQ(all.to_ints(), std::vector<int64_t>(want.begin(), want.end()));
        EXPECT_EQ(c.name(), group_name(g));
      }
    }
  }
}

}  // namespace
}  // namespace weft::parallel
