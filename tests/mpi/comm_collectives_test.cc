// The MPI Communicator: every collective, dtype and size against values computed locally from
// the ranks' known inputs (exact: inputs are small integers), async ordering, point-to-point,
// split, and the traffic counters against communicator.h's formulas.
// weft-mpi-ranks: 2 3 4
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"
#include "runtime/core/tensor.h"

namespace weft::comm {
namespace {

constexpr DType kAllDTypes[] = {DType::kF32, DType::kBF16, DType::kF16,
                                DType::kI32, DType::kI64,  DType::kU8};
constexpr DType kReducible[] = {DType::kF32, DType::kI32, DType::kI64, DType::kU8};

// Rank `r`'s input at flat index `i`: small integers, exact in every dtype and in sums over 4
// ranks; i64 adds a term past 2^32 so that truncation to 32 bits would show.
double pattern(DType dtype, int r, int64_t i) {
  const int64_t v = (r * 37 + i * 11) % 23;
  if (dtype == DType::kU8) return static_cast<double>(v);
  if (dtype == DType::kI64) return static_cast<double>(v - 11 + (int64_t{1} << 40) * (r + 1));
  return static_cast<double>(v - 11);
}

void set_value(const Tensor& t, int64_t i, double v) {
  switch (t.dtype()) {
    case DType::kF32:
      t.data<float>()[i] = static_cast<float>(v);
      break;
    case DType::kBF16:
      static_cast<uint16_t*>(t.raw())[i] = f32_to_bf16(static_cast<float>(v));
      break;
    case DType::kF16:
      static_cast<uint16_t*>(t.raw())[i] = f32_to_f16(static_cast<float>(v));
      break;
    case DType::kI32:
      t.data<int32_t>()[i] = static_cast<int32_t>(v);
      break;
    case DType::kI64:
      t.data<int64_t>()[i] = static_cast<int64_t>(v);
      break;
    case DType::kU8:
      t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
      break;
  }
}

double get_value(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data<float>()[i];
    case DType::kBF16:
      return bf16_to_f32(static_cast<const uint16_t*>(t.raw())[i]);
    case DType::kF16:
      return f16_to_f32(static_cast<const uint16_t*>(t.raw())[i]);
    case DType::kI32:
      return t.data<int32_t>()[i];
    case DType::kI64:
      return static_cast<double>(t.data<int64_t>()[i]);
    case DType::kU8:
      return t.data<uint8_t>()[i];
  }
  return 0;
}

Tensor filled(DType dtype, const Shape& shape, const std::function<double(int64_t)>& f) {
  Tensor t = Tensor::empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) set_value(t, i, f(i));
  return t;
}

// Rank r's input: pattern(r, i).
Tensor input(DType dtype, const Shape& shape, int r) {
  return filled(dtype, shape, [&](int64_t i) { return pattern(dtype, r, i); });
}

// The reduction over ranks of pattern(q, i), as weft computes it (kAvg: f32 sum / P).
double reduced(ReduceOp op, DType dtype, int p, int64_t i) {
  double acc = pattern(dtype, 0, i);
  for (int q = 1; q < p; ++q) {
    const double v = pattern(dtype, q, i);
    acc = op == ReduceOp::kMax ? std::max(acc, v) : acc + v;
  }
  if (op == ReduceOp::kAvg) return static_cast<float>(acc) / static_cast<float>(p);
  return acc;
}

::testing::AssertionResult same_values(const Tensor& actual, const Tensor& expected) {
  if (actual.shape() != expected.shape() || actual.dtype() != expected.dtype()) {
    return ::testing::AssertionFailure() << actual.str() << " vs expected " << expected.str();
  }
  int64_t wrong = 0;
  int64_t first = -1;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    if (get_value(actual, i) != get_value(expected, i)) {
      if (first < 0) first = i;
      ++wrong;
    }
  }
  if (wrong == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << wrong << " wrong of " << actual.numel() << " in " << actual.str() << "; first at "
         << first << ": " << get_value(actual, first) << " vs expected "
         << get_value(expected, first);
}

std::string describe(DType dtype, int64_t rows) {
  return std::string(dtype_name(dtype)) + " rows=" + std::to_string(rows);
}

// Rows per rank, from empty through odd counts to about 1 MB of f32 in [rows, 4].
constexpr int64_t kRows[] = {0, 1, 7, 1 << 16};
constexpr int64_t kCols = 4;

class MpiComm : public ::testing::Test {
 protected:
  void SetUp() override { world_ = mpi_world_communicator(); }
  int rank() const { return world_->rank(); }
  int size() const { return world_->size(); }

  std::unique_ptr<Communicator> world_;
};

TEST_F(MpiComm, AllReduceMatchesLocalReduction) {
  for (DType dtype : kReducible) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kAvg}) {
      if (op == ReduceOp::kAvg && dtype != DType::kF32) continue;
      for (int64_t rows : kRows) {
        SCOPED_TRACE(describe(dtype, rows));
        Tensor t = input(dtype, {rows, kCols}, rank());
        world_->all_reduce(t, op);
        Tensor expected =
            filled(dtype, {rows, kCols}, [&](int64_t i) { return reduced(op, dtype, size(), i); });
        EXPECT_TRUE(same_values(t, expected));
      }
    }
  }
}

// out rows [r*n, (r+1)*n) hold rank r's input; also in place (in = this rank's slot of out).
TEST_F(MpiComm, AllGatherConcatenatesRanksInOrder) {
  for (DType dtype : kAllDTypes) {
    for (int64_t rows : kRows) {
      SCOPED_TRACE(describe(dtype, rows));
      const int64_t block = std::max<int64_t>(rows * kCols, 1);
      Tensor expected = filled(dtype, {size() * rows, kCols}, [&](int64_t i) {
        return pattern(dtype, static_cast<int>(i / block), i % block);
      });
      Tensor out = Tensor::zeros({size() * rows, kCols}, dtype);
      world_->all_gather(input(dtype, {rows, kCols}, rank()), out);
      EXPECT_TRUE(same_values(out, expected));

      Tensor in_place = Tensor::zeros({size() * rows, kCols}, dtype);
      in_place.slice(rank() * rows, (rank() + 1) * rows)
          .copy_from(input(dtype, {rows, kCols}, rank()));
      world_->all_gather(in_place.slice(rank() * rows, (rank() + 1) * rows), in_place);
      EXPECT_TRUE(same_values(in_place, expected));
    }
  }
}

// Rank r gets the reduction of every rank's rows [r*n, (r+1)*n).
TEST_F(MpiComm, ReduceScatterReducesThisRanksBlock) {
  for (DType dtype : kReducible) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kAvg}) {
      if (op == ReduceOp::kAvg && dtype != DType::kF32) continue;
      for (int64_t rows : kRows) {
        SCOPED_TRACE(describe(dtype, rows));
        Tensor out = Tensor::zeros({rows, kCols}, dtype);
        world_->reduce_scatter(input(dtype, {size() * rows, kCols}, rank()), out, op);
        const int64_t base = rank() * rows * kCols;
        Tensor expected = filled(dtype, {rows, kCols},
                                 [&](int64_t i) { return reduced(op, dtype, size(), base + i); });
        EXPECT_TRUE(same_values(out, expected));
      }
    }
  }
}

// out block q on rank r = rank q's input block r.
TEST_F(MpiComm, AllToAllTransposesBlocks) {
  for (DType dtype : kAllDTypes) {
    for (int64_t rows : kRows) {
      SCOPED_TRACE(describe(dtype, rows));
      const int64_t block = std::max<int64_t>(rows * kCols, 1);
      Tensor out = Tensor::zeros({size() * rows, kCols}, dtype);
      world_->all_to_all(input(dtype, {size() * rows, kCols}, rank()), out);
      Tensor expected = filled(dtype, {size() * rows, kCols}, [&](int64_t i) {
        return pattern(dtype, static_cast<int>(i / block), rank() * rows * kCols + i % block);
      });
      EXPECT_TRUE(same_values(out, expected));
    }
  }
}

// Rank r sends ((r + 2j) % 3) * scale rows to rank j: zero counts included.
int64_t uneven_rows(int from, int to, int64_t scale) { return ((from + 2 * to) % 3) * scale; }

TEST_F(MpiComm, AllToAllVMovesUnevenRowCounts) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI64, DType::kU8}) {
    for (int64_t scale : {1, 5000}) {
      SCOPED_TRACE(describe(dtype, scale));
      std::vector<int64_t> send_rows, recv_rows;
      for (int q = 0; q < size(); ++q) {
        send_rows.push_back(uneven_rows(rank(), q, scale));
        recv_rows.push_back(uneven_rows(q, rank(), scale));
      }
      int64_t in_rows = 0, out_rows = 0;
      for (int q = 0; q < size(); ++q) in_rows += send_rows[q], out_rows += recv_rows[q];
      Tensor out = Tensor::zeros({out_rows, 3}, dtype);
      world_->all_to_all_v(input(dtype, {in_rows, 3}, rank()), send_rows, out, recv_rows);

      // Rows from rank q start, in q's input, after the rows q sent to ranks before this one.
      Tensor expected = Tensor::zeros({out_rows, 3}, dtype);
      int64_t at = 0;
      for (int q = 0; q < size(); ++q) {
        int64_t src_row = 0;
        for (int j = 0; j < rank(); ++j) src_row += uneven_rows(q, j, scale);
        for (int64_t e = 0; e < recv_rows[q] * 3; ++e) {
          set_value(expected, at * 3 + e, pattern(dtype, q, src_row * 3 + e));
        }
        at += recv_rows[q];
      }
      EXPECT_TRUE(same_values(out, expected));
    }
  }
}

TEST_F(MpiComm, BroadcastCopiesRootsTensorEverywhere) {
  for (DType dtype : kAllDTypes) {
    for (int64_t rows : kRows) {
      for (int root = 0; root < size(); ++root) {
        SCOPED_TRACE(describe(dtype, rows) + " root=" + std::to_string(root));
        Tensor t = input(dtype, {rows, kCols}, rank());
        world_->broadcast(t, root);
        EXPECT_TRUE(same_values(t, input(dtype, {rows, kCols}, root)));
      }
    }
  }
}

// P-1 hops around the ring: every rank ends up having seen every other rank's block. Large
// blocks need the sends and receives in flight together (a blocking send would deadlock).
TEST_F(MpiComm, SendRecvRingPassesEveryBlock) {
  const int next = (rank() + 1) % size();
  const int prev = (rank() + size() - 1) % size();
  for (int64_t rows : {int64_t{1}, int64_t{1} << 16}) {
    Tensor held = input(DType::kF32, {rows, kCols}, rank());
    for (int hop = 1; hop < size(); ++hop) {
      Tensor incoming = Tensor::zeros({rows, kCols});
      WorkPtr sent = world_->send_async(held, next, hop);
      WorkPtr received = world_->recv_async(incoming, prev, hop);
      received->wait();
      sent->wait();
      const int origin = (rank() - hop + size()) % size();
      EXPECT_TRUE(same_values(incoming, input(DType::kF32, {rows, kCols}, origin)))
          << "hop " << hop;
      held = incoming;
    }
  }
}

// Receives posted in the opposite order of the sends' tags still get the message with their tag.
TEST_F(MpiComm, RecvMatchesByTag) {
  const int next = (rank() + 1) % size();
  const int prev = (rank() + size() - 1) % size();
  Tensor a = Tensor::zeros({5}, DType::kI32);
  Tensor b = Tensor::zeros({5}, DType::kI32);
  WorkPtr send_a = world_->send_async(input(DType::kI32, {5}, rank()), next, 1);
  WorkPtr send_b = world_->send_async(input(DType::kI32, {5}, rank() + 100), next, 2);
  world_->recv(b, prev, 2);
  world_->recv(a, prev, 1);
  EXPECT_TRUE(send_a->done() && send_b->done());
  EXPECT_TRUE(same_values(a, input(DType::kI32, {5}, prev)));
  EXPECT_TRUE(same_values(b, input(DType::kI32, {5}, prev + 100)));
}

// Several async ops in flight, waited in reverse order: each result is right, and once the
// last is done every earlier one is (completion follows issue order).
TEST_F(MpiComm, AsyncOpsCompleteInIssueOrderWithRightResults) {
  const int64_t rows = 4096;
  const int next = (rank() + 1) % size();
  const int prev = (rank() + size() - 1) % size();
  Tensor summed = input(DType::kF32, {rows, kCols}, rank());
  Tensor gathered = Tensor::zeros({size() * rows, kCols});
  Tensor scattered = Tensor::zeros({rows, kCols}, DType::kI64);
  Tensor received = Tensor::zeros({rows, kCols});
  Tensor maxed = input(DType::kI32, {rows, kCols}, rank());
  std::vector<WorkPtr> works;
  works.push_back(world_->all_reduce_async(summed, ReduceOp::kSum));
  works.push_back(world_->recv_async(received, prev, 7));
  works.push_back(world_->all_gather_async(input(DType::kF32, {rows, kCols}, rank()), gathered));
  works.push_back(world_->send_async(input(DType::kF32, {rows, kCols}, rank()), next, 7));
  works.push_back(world_->reduce_scatter_async(input(DType::kI64, {size() * rows, kCols}, rank()),
                                               scattered, ReduceOp::kSum));
  works.push_back(world_->all_reduce_async(maxed, ReduceOp::kMax));
  for (auto it = works.rbegin(); it != works.rend(); ++it) {
    (*it)->wait();
    if (it == works.rbegin()) {
      for (const WorkPtr& w : works) EXPECT_TRUE(w->done());
    }
  }
  const int p = size();
  EXPECT_TRUE(same_values(summed, filled(DType::kF32, {rows, kCols}, [&](int64_t i) {
                            return reduced(ReduceOp::kSum, DType::kF32, p, i);
                          })));
  EXPECT_TRUE(same_values(received, input(DType::kF32, {rows, kCols}, prev)));
  for (int q = 0; q < p; ++q) {
    EXPECT_TRUE(same_values(gathered.slice(q * rows, (q + 1) * rows),
                            input(DType::kF32, {rows, kCols}, q)));
  }
  const int64_t base = rank() * rows * kCols;
  EXPECT_TRUE(same_values(scattered, filled(DType::kI64, {rows, kCols}, [&](int64_t i) {
                            return reduced(ReduceOp::kSum, DType::kI64, p, base + i);
                          })));
  EXPECT_TRUE(same_values(maxed, filled(DType::kI32, {rows, kCols}, [&](int64_t i) {
                            return reduced(ReduceOp::kMax, DType::kI32, p, i);
                          })));
}

// Colour = parity, key = -rank: each group lists its world ranks in descending order.
TEST_F(MpiComm, SplitGroupsByColourOrderedByKey) {
  std::vector<int> members;
  for (int r = size() - 1; r >= 0; --r) {
    if (r % 2 == rank() % 2) members.push_back(r);
  }
  std::unique_ptr<Communicator> group = world_->split(rank() % 2, -rank(), "parity");
  EXPECT_EQ(group->name(), "parity");
  ASSERT_EQ(group->size(), static_cast<int>(members.size()));
  EXPECT_EQ(members[group->rank()], rank());

  Tensor ranks = Tensor::zeros({group->size()}, DType::kI64);
  Tensor mine = Tensor::from_ints({rank()}, {1});
  // The group's thread and the world's run at once.
  WorkPtr gathered = group->all_gather_async(mine, ranks);
  Tensor world_sum = Tensor::from_ints({rank()}, {1});
  world_->all_reduce(world_sum);
  gathered->wait();
  EXPECT_EQ(ranks.to_ints(), std::vector<int64_t>(members.begin(), members.end()));
  EXPECT_EQ(world_sum.to_ints()[0], static_cast<int64_t>(size()) * (size() - 1) / 2);

  Tensor sum = Tensor::from_ints({rank()}, {1});
  group->all_reduce(sum);
  int64_t expected = 0;
  for (int r : members) expected += r;
  EXPECT_EQ(sum.to_ints()[0], expected);
  EXPECT_EQ(group->stats().at("all_reduce").calls, 1);
  EXPECT_EQ(world_->stats().at("all_reduce").calls, 1);
}

// A group split_within another counts its calls in both; a plain split only in its own.
TEST_F(MpiComm, SplitWithinCountsInTheParentToo) {
  std::unique_ptr<Communicator> parent = world_->split(0, rank(), "parent");
  std::unique_ptr<Communicator> within = parent->split_within(rank() % 2, rank(), "within");
  std::unique_ptr<Communicator> apart = parent->split(rank() % 2, rank(), "apart");
  const int64_t n = within->size();
  Tensor t = Tensor::zeros({8});  // 32 bytes
  within->all_reduce(t);
  apart->all_reduce(t);
  apart->all_reduce(t);
  EXPECT_EQ(within->stats().at("all_reduce").calls, 1);
  EXPECT_EQ(apart->stats().at("all_reduce").calls, 2);
  const std::map<std::string, CallStats> in_parent = parent->stats();
  if (n == 1) {
    EXPECT_EQ(in_parent.at("all_reduce").bytes_sent, 0);  // a group of one sends nothing
  } else {
    EXPECT_EQ(in_parent.at("all_reduce").bytes_sent, 2 * (n - 1) * 32 / n);
  }
  EXPECT_EQ(in_parent.at("all_reduce").calls, 1);
  EXPECT_EQ(world_->stats().count("all_reduce"), 0u) << "the parent's own parent is untouched";
}

// One call of each kind with S bytes: calls and bytes_sent follow communicator.h's formulas.
TEST_F(MpiComm, TrafficCountersFollowTheFormulas) {
  const int64_t p = size();
  const int64_t rows = 6 * p;  // S = rows * 4 f32 = 96 * p bytes
  const int64_t s = rows * 4 * 4;
  const int next = (rank() + 1) % size();
  const int prev = (rank() + size() - 1) % size();
  world_->reset_stats();
  Tensor full = input(DType::kF32, {rows, 4}, rank());
  Tensor part = input(DType::kF32, {rows / p, 4}, rank());
  Tensor out = Tensor::zeros({rows, 4});
  world_->all_reduce(full);
  world_->all_reduce(full);
  world_->all_gather(part, out);
  world_->reduce_scatter(full, part);
  world_->all_to_all(full, out);
  std::vector<int64_t> send_rows(p, 0), recv_rows(p, 0);
  send_rows[next] = 3;
  recv_rows[prev] = 3;
  send_rows[rank()] = 2;  // rows to itself are not traffic
  recv_rows[rank()] = 2;
  Tensor v_out = out.slice(0, 5);
  world_->all_to_all_v(full.slice(0, 5), send_rows, v_out, recv_rows);
  WorkPtr r = world_->recv_async(out, prev, 0);
  world_->send(full, next, 0);
  r->wait();
  world_->broadcast(full, 0);
  world_->barrier();

  const int64_t v_bytes = 3 * 4 * 4;  // the 3 rows to `next`
  const std::map<std::string, CallStats> expected = {
      {"all_reduce", {2, 2 * (2 * (p - 1) * s / p)}},
      {"all_gather", {1, (p - 1) * s / p}},
      {"reduce_scatter", {1, (p - 1) * s / p}},
      {"all_to_all", {1, (p - 1) * s / p}},
      {"all_to_all_v", {1, v_bytes}},
      {"send", {1, s}},
      {"recv", {1, 0}},
      {"broadcast", {1, s}},
      {"barrier", {1, 0}},
  };
  const std::map<std::string, CallStats> stats = world_->stats();
  ASSERT_EQ(stats.size(), expected.size());
  for (const auto& [kind, want] : expected) {
    ASSERT_EQ(stats.count(kind), 1u) << kind;
    EXPECT_EQ(stats.at(kind).calls, want.calls) << kind;
    EXPECT_EQ(stats.at(kind).bytes_sent, want.bytes_sent) << kind;
  }
  const CallStats sum = total(stats);
  EXPECT_EQ(sum.calls, 10);
  EXPECT_EQ(sum.bytes_sent, (4 * (p - 1) + 3 * (p - 1)) * s / p + v_bytes + 2 * s);

  world_->reset_stats();
  EXPECT_TRUE(world_->stats().empty());
  world_->barrier();
  EXPECT_EQ(world_->stats().at("barrier").calls, 1);
}

// The test main initialised MPI: a runtime accepts it, reports the world, and leaves MPI running.
TEST(MpiRuntime, AcceptsInitialisedMpiAndLeavesItRunning) {
  int rank = -1;
  int size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  {
    MpiRuntime runtime(nullptr, nullptr);
    EXPECT_EQ(runtime.world_rank(), rank);
    EXPECT_EQ(runtime.world_size(), size);
  }
  int finalized = 1;
  MPI_Finalized(&finalized);
  EXPECT_FALSE(finalized);
  Tensor t = Tensor::from_ints({1}, {1});
  mpi_world_communicator()->all_reduce(t);
  EXPECT_EQ(t.to_ints()[0], size);
}

}  // namespace
}  // namespace weft::comm
