// comm/activity.h: the in-progress record the health monitor reports, and the rank lists it
// names groups with.
#include "comm/activity.h"

#include <gtest/gtest.h>

#include <thread>

namespace weft::comm {
namespace {

TEST(Activity, RankListsRoundTrip) {
  EXPECT_EQ(format_ranks({}), "");
  EXPECT_EQ(format_ranks({3}), "3");
  EXPECT_EQ(format_ranks({0, 1, 2, 3}), "0-3");
  EXPECT_EQ(format_ranks({0, 2, 4}), "0,2,4");
  EXPECT_EQ(format_ranks({1, 4, 5, 6, 9}), "1,4-6,9");
  for (const std::vector<int>& ranks :
       std::vector<std::vector<int>>{{}, {7}, {0, 1, 2, 3}, {0, 2, 4}, {1, 4, 5, 6, 9}}) {
    EXPECT_EQ(parse_ranks(format_ranks(ranks)), ranks);
  }
  EXPECT_TRUE(parse_ranks("1,x").empty());
  EXPECT_TRUE(parse_ranks("1-2-3").empty());
}

TEST(Activity, OldestInProgressAndLastDone) {
  Activity& a = Activity::get();
  OpRecord first;
  first.kind = "all_reduce";
  first.seq = 1;
  const int64_t t1 = a.begin(first);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  OpRecord second;
  second.kind = "recv";
  second.peer = 3;
  const int64_t t2 = a.begin(second);
  Activity::Snapshot s = a.snapshot();
  ASSERT_TRUE(s.oldest.has_value());
  EXPECT_EQ(s.oldest->kind, "all_reduce");
  a.end(t1);
  s = a.snapshot();
  EXPECT_EQ(s.oldest->kind, "recv");
  EXPECT_EQ(s.last_done->kind, "all_reduce");
  a.end(t2);
  s = a.snapshot();
  EXPECT_FALSE(s.oldest.has_value());
  EXPECT_EQ(s.last_done->peer, 3);
}

TEST(Activity, IdleWaitScopeNests) {
  EXPECT_FALSE(IdleWaitScope::active());
  {
    const IdleWaitScope outer;
    EXPECT_TRUE(IdleWaitScope::active());
    {
      const IdleWaitScope inner;
      EXPECT_TRUE(IdleWaitScope::active());
    }
    EXPECT_TRUE(IdleWaitScope::active());
  }
  EXPECT_FALSE(IdleWaitScope::active());
}

TEST(Activity, PollersRunUntilRemoved) {
  int calls = 0;
  const int64_t id = add_poller([&] {
    ++calls;
    return calls == 2 ? std::string("broken") : std::string();
  });
  EXPECT_EQ(poll_all(), "");
  EXPECT_EQ(poll_all(), "broken");
  remove_poller(id);
  EXPECT_EQ(poll_all(), "");
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace weft::comm
