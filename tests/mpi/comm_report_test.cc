// write_comm_report: rank 0's JSON lists every rank's per-group, per-kind traffic, and writing
// it counts no traffic of its own.
// weft-mpi-ranks: 2 3 4
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "comm/mpi_communicator.h"
#include "comm/report.h"
#include "tests/support/test_util.h"

namespace weft::comm {
namespace {

using nlohmann::json;

void expect_kind(const json& group, const std::string& kind, int64_t calls, int64_t bytes) {
  ASSERT_TRUE(group["by_kind"].contains(kind)) << group.dump();
  EXPECT_EQ(group["by_kind"][kind]["calls"].get<int64_t>(), calls) << kind;
  EXPECT_EQ(group["by_kind"][kind]["bytes_sent"].get<int64_t>(), bytes) << kind;
}

TEST(CommReport, ListsEveryRanksGroupsWithFormulaBytes) {
  std::unique_ptr<Communicator> world = mpi_world_communicator("world");
  const int p = world->size();
  const int rank = world->rank();
  std::unique_ptr<Communicator> parity = world->split(rank % 2, rank, "parity");

  Tensor grads = Tensor::zeros({250});  // 1000 bytes
  world->all_reduce(grads);
  Tensor mine = Tensor::zeros({2});
  Tensor all = Tensor::zeros({2 * parity->size()});
  parity->all_gather(mine, all);
  Tensor message = Tensor::zeros({10});  // 40 bytes
  if (rank == 0) world->send(message, 1, 3);
  if (rank == 1) world->recv(message, 0, 3);
  world->barrier();

  const std::string path = testing::make_temp_dir("comm_report") + "/report.json";
  const auto world_before = world->stats();
  ASSERT_TRUE(write_comm_report(*world, {world.get(), parity.get()}, path).ok());
  EXPECT_EQ(total(world->stats()).calls, total(world_before).calls);
  EXPECT_EQ(total(world->stats()).bytes_sent, total(world_before).bytes_sent);
  if (rank != 0) return;

  std::ifstream file(path);
  const json report = json::parse(file);
  ASSERT_EQ(report["ranks"].size(), static_cast<size_t>(p));
  for (int r = 0; r < p; ++r) {
    EXPECT_EQ(report["ranks"][r]["rank"].get<int>(), r);
    EXPECT_EQ(report["ranks"][r]["groups"].size(), 2u);
  }
  const int64_t all_reduce_bytes = 2 * (p - 1) * 1000 / p;
  const json& world0 = report["ranks"][0]["groups"]["world"];
  EXPECT_EQ(world0["calls"].get<int64_t>(), 3);
  EXPECT_EQ(world0["bytes_sent"].get<int64_t>(), all_reduce_bytes + 40);
  expect_kind(world0, "all_reduce", 1, all_reduce_bytes);
  expect_kind(world0, "send", 1, 40);
  expect_kind(world0, "barrier", 1, 0);

  const json& world1 = report["ranks"][1]["groups"]["world"];
  EXPECT_EQ(world1["calls"].get<int64_t>(), 3);
  EXPECT_EQ(world1["bytes_sent"].get<int64_t>(), all_reduce_bytes);
  expect_kind(world1, "recv", 1, 0);
  EXPECT_FALSE(world1["by_kind"].contains("send"));

  // Parity groups: ceil(P/2) even ranks, floor(P/2) odd; all_gather sends (g-1)/g of g*8 bytes.
  const int64_t evens = (p + 1) / 2;
  const int64_t odds = p / 2;
  expect_kind(report["ranks"][0]["groups"]["parity"], "all_gather", 1, (evens - 1) * 8);
  expect_kind(report["ranks"][1]["groups"]["parity"], "all_gather", 1, (odds - 1) * 8);
}

TEST(CommReport, UnwritablePathFailsOnEveryRank) {
  std::unique_ptr<Communicator> world = mpi_world_communicator("world");
  const absl::Status status =
      write_comm_report(*world, {world.get()}, "/nonexistent-weft-dir/report.json");
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("/nonexistent-weft-dir/report.json"),
            std::string::npos)
      << status;
}

}  // namespace
}  // namespace weft::comm
