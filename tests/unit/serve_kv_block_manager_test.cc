// The KV block manager with no model: reference counts, prefix reuse of named full blocks, LRU
// eviction of unreferenced cached blocks, and no leak over 10,000 random request lifecycles.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "runtime/serve/kv_block_manager.h"

namespace weft::serve {
namespace {

std::vector<int64_t> iota_tokens(int64_t n, int64_t first = 0) {
  std::vector<int64_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

TEST(KvBlockManager, CountsReferencesAndRefusesWhenEveryBlockIsTaken) {
  KvBlockManager m(3, 4, /*prefix_caching=*/true);
  std::vector<int> got;
  for (int i = 0; i < 3; ++i) got.push_back(*m.allocate());
  EXPECT_EQ(std::set<int>(got.begin(), got.end()).size(), 3u);
  EXPECT_EQ(m.num_free(), 0);
  EXPECT_FALSE(m.allocate().has_value());
  m.release(std::vector<int>{got[1]});
  EXPECT_EQ(m.num_free(), 1);
  EXPECT_EQ(*m.allocate(), got[1]);  // an anonymous block goes straight back to the free list
  m.release(got);
  EXPECT_EQ(m.num_free(), 3);
  EXPECT_EQ(m.num_used(), 0);
}

TEST(KvBlockManager, ReusesNamedFullBlocksOfACommonPrefixOnly) {
  KvBlockManager m(8, 4, true);
  const std::vector<int64_t> a = iota_tokens(10);  // two full blocks and two tokens
  std::vector<int> table = {*m.allocate(), *m.allocate(), *m.allocate()};
  uint64_t name = m.name_full_block(table[0], 0, std::span(a).subspan(0, 4));
  name = m.name_full_block(table[1], name, std::span(a).subspan(4, 4));
  // Same first block, different second: only the first is reused.
  std::vector<int64_t> b = iota_tokens(12);
  b[5] = 99;
  EXPECT_EQ(m.lookup_prefix(b), std::vector<int>{table[0]});
  // Same 8 tokens: both; the partial third block is never named.
  EXPECT_EQ(m.lookup_prefix(iota_tokens(11)), (std::vector<int>{table[0], table[1]}));
  // A different first block: nothing, even though the second block's tokens match.
  std::vector<int64_t> c = iota_tokens(8);
  c[0] = 7;
  EXPECT_TRUE(m.lookup_prefix(c).empty());
  // Shared blocks count one reference per holder and stay cached once released.
  m.acquire(std::vector<int>{table[0], table[1]});
  EXPECT_EQ(m.ref_count(table[0]), 2);
  m.release(table);
  m.release(std::vector<int>{table[0], table[1]});
  EXPECT_EQ(m.num_used(), 0);
  EXPECT_EQ(m.lookup_prefix(iota_tokens(8)), (std::vector<int>{table[0], table[1]}));
  EXPECT_GT(m.prefix_hit_rate(), 0.0);
}

TEST(KvBlockManager, EvictsTheLeastRecentlyUsedUnreferencedBlockWhenNoneIsFree) {
  KvBlockManager m(2, 2, true);
  const std::vector<int64_t> x = {1, 2}, y = {3, 4};
  const int bx = *m.allocate();
  const int by = *m.allocate();
  m.name_full_block(bx, 0, x);
  m.name_full_block(by, 0, y);
  m.release(std::vector<int>{bx});  // x unreferenced first: least recently used
  m.release(std::vector<int>{by});
  EXPECT_EQ(m.num_free(), 2);
  EXPECT_EQ(*m.allocate(), bx);  // evicts x, keeps y
  EXPECT_TRUE(m.lookup_prefix(x).empty());
  EXPECT_EQ(m.lookup_prefix(y), std::vector<int>{by});
  // Taking y back out of the LRU list protects it: nothing is left to hand out.
  m.acquire(std::vector<int>{by});
  EXPECT_FALSE(m.allocate().has_value());
}

TEST(KvBlockManager, TenThousandRandomLifecyclesLeaveNoBlockBehind) {
  constexpr int kBlocks = 64, kBlockSize = 4;
  KvBlockManager m(kBlocks, kBlockSize, true);
  std::mt19937_64 rng(5);
  // Prompts drawn from a few shared prefixes, so blocks are shared, cached and evicted.
  std::map<int, std::vector<int>> live;  // request -> block table
  int next = 0;
  for (int step = 0; step < 10000; ++step) {
    if (!live.empty() && (rng() % 2 == 0 || m.num_free() < 8)) {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      m.release(it->second);
      live.erase(it);
      continue;
    }
    std::vector<int64_t> tokens =
        iota_tokens(4 + static_cast<int64_t>(rng() % 20), 100 * static_cast<int64_t>(rng() % 3));
    std::vector<int> table = m.lookup_prefix(tokens);
    m.acquire(table);
    uint64_t name = 0;
    for (size_t b = 0; b < table.size(); ++b) {
      name =
          KvBlockManager::block_hash(name, std::span(tokens).subspan(b * kBlockSize, kBlockSize));
    }
    const size_t needed = (tokens.size() + kBlockSize - 1) / kBlockSize;
    bool ok = true;
    while (table.size() < needed) {
      std::optional<int> b = m.allocate();
      if (!b) {
        ok = false;
        break;
      }
      table.push_back(*b);
      if ((table.size()) * kBlockSize <= tokens.size()) {
        name = m.name_full_block(
            *b, name, std::span(tokens).subspan((table.size() - 1) * kBlockSize, kBlockSize));
      }
    }
    if (!ok) {
      m.release(table);
      continue;
    }
    live[next++] = table;
    // Invariant: referenced blocks = blocks held by live tables, counted with multiplicity.
    std::map<int, int> held;
    for (const auto& [id, t] : live) {
      for (int b : t) ++held[b];
    }
    for (const auto& [b, refs] : held) ASSERT_EQ(m.ref_count(b), refs) << "block " << b;
    ASSERT_EQ(m.num_used(), static_cast<int>(held.size()));
  }
  for (const auto& [id, t] : live) m.release(t);
  EXPECT_EQ(m.num_free(), kBlocks);
  EXPECT_EQ(m.num_used(), 0);
}

}  // namespace
}  // namespace weft::serve
