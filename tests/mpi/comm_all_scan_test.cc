// All-Scan on the MPI Communicator: forward and reverse scans against the sequential recurrence
// S_in(next) = decay(r) * S_in(r) + local(r), which every rank computes from all ranks' known
// inputs. Inputs are dyadic (quarters), so every product and sum is exact in f32 and results
// are compared for equality. Also: the piece layout, the entry value on the first rank, the
// traffic counters, back-to-back async scans, and that a scan never takes a user's message.
// weft-mpi-ranks: 2 3 4 5
#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/all_scan.h"
#include "comm/mpi_communicator.h"
#include "runtime/core/tensor.h"

namespace weft::comm {
namespace {

const Shape kShape = {5, 3};  // 15 elements: 4 blocks cut them unevenly
// One piece, uneven pieces, pieces that divide 15, and more blocks than elements.
constexpr int kBlocks[] = {1, 3, 4, 100};

Tensor filled(const Shape& shape, float (*f)(int, int64_t), int r) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = f(r, i);
  return t;
}

// Rank r's local state: quarters in [-1.25, 1.25].
float local_value(int r, int64_t i) { return static_cast<float>((r * 7 + i * 3) % 11 - 5) / 4; }
// Rank r's decay: 0.25, 0.5, 0.75 or 1.
float decay_value(int r, int64_t i) { return static_cast<float>(1 + (r + i) % 4) / 4; }
// The first rank's entry value when a test gives one.
float entry_value(int /*r*/, int64_t i) { return static_cast<float>(i % 5 - 2) / 2; }

// What rank `r` of `p` holds after the scan: S_in(r) by the sequential recurrence from the
// first rank of the direction, which starts from `entry`.
std::vector<float> expected_s_in(int r, int p, bool reverse, const std::vector<float>& entry) {
  std::vector<float> s = entry;
  const int first = reverse ? p - 1 : 0;
  const int step = reverse ? -1 : 1;
  for (int q = first; q != r; q += step) {
    for (size_t i = 0; i < s.size(); ++i) {
      s[i] =
          decay_value(q, static_cast<int64_t>(i)) * s[i] + local_value(q, static_cast<int64_t>(i));
    }
  }
  return s;
}

std::string describe(int blocks, bool reverse) {
  return std::string(reverse ? "reverse" : "forward") + " blocks=" + std::to_string(blocks);
}

class AllScan : public ::testing::Test {
 protected:
  void SetUp() override { world_ = mpi_world_communicator(); }
  int rank() const { return world_->rank(); }
  int size() const { return world_->size(); }
  bool is_first(bool reverse) const { return rank() == (reverse ? size() - 1 : 0); }
  bool is_last(bool reverse) const { return rank() == (reverse ? 0 : size() - 1); }

  // Runs one scan with this rank's inputs; the first rank of the direction enters with
  // `entry` (or zeros), every other rank with a value the scan must overwrite.
  std::vector<float> scan(int blocks, bool reverse, bool with_entry) {
    const Tensor local = filled(kShape, local_value, rank());
    const Tensor decay = filled(kShape, decay_value, rank());
    Tensor s_in = Tensor::full(kShape, 1e9f);
    if (is_first(reverse)) {
      s_in = with_entry ? filled(kShape, entry_value, rank()) : Tensor::zeros(kShape);
    }
    world_->all_scan(local, decay, s_in, blocks, reverse);
    return s_in.to_floats();
  }

  std::vector<float> entry(bool with_entry) const {
    const Tensor t = with_entry ? filled(kShape, entry_value, 0) : Tensor::zeros(kShape);
    return t.to_floats();
  }

  std::unique_ptr<Communicator> world_;
};

TEST(ScanPieces, CutsEvenlyAndClampsBlocks) {
  auto counts = [](const std::vector<ScanPiece>& pieces) {
    std::vector<int64_t> out;
    int64_t next = 0;
    for (const ScanPiece& p : pieces) {
      EXPECT_EQ(p.begin, next);  // contiguous, in order
      next += p.count;
      out.push_back(p.count);
    }
    return out;
  };
  EXPECT_EQ(counts(scan_pieces(10, 3, 1 << 30)), (std::vector<int64_t>{4, 3, 3}));
  EXPECT_EQ(counts(scan_pieces(10, 0, 1 << 30)), (std::vector<int64_t>{10}));
  EXPECT_EQ(counts(scan_pieces(3, 100, 1 << 30)), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_EQ(counts(scan_pieces(0, 4, 1 << 30)), (std::vector<int64_t>{0}));
  // A piece never exceeds max_piece: 1 block of 10 becomes 3 pieces of at most 4.
  EXPECT_EQ(counts(scan_pieces(10, 1, 4)), (std::vector<int64_t>{4, 3, 3}));
  // No limit (the NCCL backend's max_piece) leaves the blocks as asked.
  EXPECT_EQ(counts(scan_pieces(10, 2, std::numeric_limits<int64_t>::max())),
            (std::vector<int64_t>{5, 5}));
}

TEST_F(AllScan, ForwardMatchesSequentialRecurrence) {
  for (int blocks : kBlocks) {
    SCOPED_TRACE(describe(blocks, false));
    EXPECT_EQ(scan(blocks, false, false), expected_s_in(rank(), size(), false, entry(false)));
  }
}

TEST_F(AllScan, ReverseMatchesSequentialRecurrence) {
  for (int blocks : kBlocks) {
    SCOPED_TRACE(describe(blocks, true));
    EXPECT_EQ(scan(blocks, true, false), expected_s_in(rank(), size(), true, entry(false)));
  }
}

TEST_F(AllScan, FirstRankEntryValueCarriesThrough) {
  for (bool reverse : {false, true}) {
    for (int blocks : {1, 4}) {
      SCOPED_TRACE(describe(blocks, reverse));
      const std::vector<float> got = scan(blocks, reverse, true);
      EXPECT_EQ(got, expected_s_in(rank(), size(), reverse, entry(true)));
      if (is_first(reverse)) EXPECT_EQ(got, entry(true));  // left as it entered
    }
  }
}

TEST_F(AllScan, CountsOneCallAndOneStateSentExceptOnTheLastRank) {
  const int64_t state_bytes = shape_numel(kShape) * 4;
  for (bool reverse : {false, true}) {
    SCOPED_TRACE(describe(3, reverse));
    world_->reset_stats();
    scan(3, reverse, false);
    const std::map<std::string, CallStats> stats = world_->stats();
    ASSERT_EQ(stats.size(), 1u);
    ASSERT_EQ(stats.count("all_scan"), 1u);
    EXPECT_EQ(stats.at("all_scan").calls, 1);
    EXPECT_EQ(stats.at("all_scan").bytes_sent, is_last(reverse) ? 0 : state_bytes);
  }
}

// The ZeCO pattern: a forward scan and a reverse one issued before either is waited for.
TEST_F(AllScan, BackToBackAsyncScansCompleteWithTheirOwnResults) {
  const Tensor local = filled(kShape, local_value, rank());
  const Tensor decay = filled(kShape, decay_value, rank());
  Tensor forward = Tensor::zeros(kShape);
  Tensor reverse = Tensor::zeros(kShape);
  const WorkPtr first = world_->all_scan_async(local, decay, forward, 3, false);
  const WorkPtr second = world_->all_scan_async(local, decay, reverse, 2, true);
  second->wait();
  EXPECT_TRUE(first->done());
  first->wait();
  EXPECT_EQ(forward.to_floats(), expected_s_in(rank(), size(), false, entry(false)));
  EXPECT_EQ(reverse.to_floats(), expected_s_in(rank(), size(), true, entry(false)));
}

// Each rank sends the next one a user message of one piece's size before the scan and
// receives it after: were the scan on the user's tag, its first piece would take that message.
TEST_F(AllScan, NeverTakesAUsersMessage) {
  constexpr int kPieces = 3;  // 15 elements: pieces of 5
  const int next = (rank() + 1) % size();
  const int prev = (rank() + size() - 1) % size();
  const Tensor message = Tensor::full({5}, static_cast<float>(-100 - rank()));
  for (int tag : {0, 1}) {
    SCOPED_TRACE("tag " + std::to_string(tag));
    const WorkPtr sent = world_->send_async(message, next, tag);
    const std::vector<float> got = scan(kPieces, false, false);
    Tensor received = Tensor::zeros({5});
    world_->recv(received, prev, tag);
    sent->wait();
    EXPECT_EQ(got, expected_s_in(rank(), size(), false, entry(false)));
    EXPECT_EQ(received.to_floats(), std::vector<float>(5, static_cast<float>(-100 - prev)));
  }
}

}  // namespace
}  // namespace weft::comm
