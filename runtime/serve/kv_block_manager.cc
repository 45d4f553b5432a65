#include "runtime/serve/kv_block_manager.h"

#include <algorithm>

#include "runtime/core/check.h"

namespace weft::serve {

KvBlockManager::KvBlockManager(int num_blocks, int block_size, bool prefix_caching)
    : block_size_(block_size), prefix_caching_(prefix_caching), blocks_(num_blocks) {
  WEFT_CHECK(num_blocks >= 1 && block_size >= 1) << num_blocks << " blocks of " << block_size;
  // Hand out low ids first: pop_back from a reversed list.
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

uint64_t KvBlockManager::block_hash(uint64_t parent, std::span<const int64_t> tokens) {
  // FNV-1a over the parent's name and the token ids: stable across runs and builds.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
  };
  mix(parent);
  for (int64_t t : tokens) mix(static_cast<uint64_t>(t));
  return h == 0 ? 1 : h;  // 0 means "no parent"
}

std::vector<int> KvBlockManager::lookup_prefix(std::span<const int64_t> tokens) {
  std::vector<int> found;
  if (!prefix_caching_) return found;
  const size_t full = tokens.size() / block_size_;
  lookups_ += static_cast<int64_t>(full);
  uint64_t parent = 0;
  for (size_t i = 0; i < full; ++i) {
    const std::span<const int64_t> chunk = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = block_hash(parent, chunk);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const Block& b = blocks_[it->second];
    if (b.parent != parent || !std::equal(chunk.begin(), chunk.end(), b.tokens.begin())) break;
    ++hits_;
    found.push_back(it->second);
    parent = h;
  }
  return found;
}

void KvBlockManager::take(int block) {
  Block& b = blocks_.at(block);
  if (b.refs == 0) {
    WEFT_CHECK(b.hash.has_value()) << "block " << block << " is free, not cached";
    evictable_.erase(b.lru_pos);
  }
  ++b.refs;
}

void KvBlockManager::acquire(std::span<const int> blocks) {
  for (int block : blocks) take(block);
}

std::optional<int> KvBlockManager::allocate() {
  int block = -1;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (!evictable_.empty()) {
    block = evictable_.front();
    evictable_.pop_front();
    Block& b = blocks_[block];
    by_hash_.erase(*b.hash);
    b.hash.reset();
    b.tokens.clear();
  } else {
    return std::nullopt;
  }
  blocks_[block].refs = 1;
  return block;
}

uint64_t KvBlockManager::name_full_block(int block, uint64_t parent,
                                         std::span<const int64_t> tokens) {
  WEFT_CHECK_EQ(static_cast<int>(tokens.size()), block_size_);
  const uint64_t h = block_hash(parent, tokens);
  Block& b = blocks_.at(block);
  WEFT_CHECK(b.refs > 0) << "naming unreferenced block " << block;
  if (!prefix_caching_ || b.hash.has_value() || by_hash_.count(h)) return h;
  b.hash = h;
  b.parent = parent;
  b.tokens.assign(tokens.begin(), tokens.end());
  by_hash_[h] = block;
  return h;
}

void KvBlockManager::release(std::span<const int> blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    Block& b = blocks_.at(*it);
    WEFT_CHECK(b.refs > 0) << "block " << *it << " released more often than taken";
    if (--b.refs > 0) continue;
    if (b.hash.has_value()) {
      b.lru_pos = evictable_.insert(evictable_.end(), *it);
    } else {
      free_.push_back(*it);
    }
  }
}

double KvBlockManager::prefix_hit_rate() const {
  return lookups_ == 0 ? 0.0 : static_cast<double>(hits_) / static_cast<double>(lookups_);
}

}  // namespace weft::serve
