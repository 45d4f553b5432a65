// The paged KV cache's bookkeeping (vLLM's block manager; docs/serving.md): a fixed pool of
// blocks of `block_size` token slots, reference counts, and prefix caching — a full block is
// named by a hash of its tokens and of the blocks before it, so a request whose prompt starts
// with the same full blocks reuses them; unreferenced named blocks stay cached and are evicted
// least recently used first when a fresh block is needed. The pool is sized once; it never grows.
//
// Only ids and counts live here (no tensors, no model): a block id indexes the layers' KV
// tensors, slot = block * block_size + offset.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace weft::serve {

class KvBlockManager {
 public:
  // `num_blocks` >= 1, `block_size` >= 1 (checked).
  KvBlockManager(int num_blocks, int block_size, bool prefix_caching);

  [[nodiscard]] int num_blocks() const { return static_cast<int>(blocks_.size()); }
  [[nodiscard]] int block_size() const { return block_size_; }
  [[nodiscard]] bool prefix_caching() const { return prefix_caching_; }
  // Blocks allocate() can hand out now: never used, released, or cached but unreferenced.
  [[nodiscard]] int num_free() const { return static_cast<int>(free_.size() + evictable_.size()); }
  [[nodiscard]] int num_used() const { return num_blocks() - num_free(); }
  [[nodiscard]] int ref_count(int block) const { return blocks_.at(block).refs; }

  // The hash that names a full block of `tokens` (block_size of them) following the block
  // named `parent` (0 for the first block of a sequence).
  [[nodiscard]] static uint64_t block_hash(uint64_t parent, std::span<const int64_t> tokens);

  // The cached blocks holding the longest prefix of `tokens` made of whole blocks (nothing when
  // prefix caching is off). Takes no reference; hits and lookups feed prefix_hit_rate().
  [[nodiscard]] std::vector<int> lookup_prefix(std::span<const int64_t> tokens);
  // Takes a reference on each block (from lookup_prefix); unreferenced ones leave the LRU list.
  void acquire(std::span<const int> blocks);
  // A fresh block with one reference: a free one, else the least recently used unreferenced
  // cached block (its name forgotten). nullopt when every block is referenced.
  [[nodiscard]] std::optional<int> allocate();
  // Names full block `block` (holding `tokens`, after the block named `parent`) for reuse and
  // returns its hash. When an equal block is already cached, that one keeps the name and
  // `block` stays anonymous (it is freed, not cached, once released).
  uint64_t name_full_block(int block, uint64_t parent, std::span<const int64_t> tokens);
  // Drops one reference from each block, last block first (so the LRU list evicts a sequence's
  // tail before its shared head). A named block left unreferenced becomes evictable, an
  // anonymous one free.
  void release(std::span<const int> blocks);

  // Full blocks served from the cache over full blocks looked up, since the start (0 if none).
  [[nodiscard]] double prefix_hit_rate() const;

 private:
  struct Block {
    int refs = 0;
    std::optional<uint64_t> hash;      // set while the block is named
    uint64_t parent = 0;               // the name's inputs, compared on lookup so that a hash
    std::vector<int64_t> tokens;       // collision can never hand out the wrong block
    std::list<int>::iterator lru_pos;  // valid while evictable
  };
  void take(int block);

  int block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int> free_;                      // never used or anonymous and released
  std::list<int> evictable_;                   // named, unreferenced; front = least recently used
  std::unordered_map<uint64_t, int> by_hash_;  // name -> block
  int64_t lookups_ = 0;
  int64_t hits_ = 0;
};

}  // namespace weft::serve
