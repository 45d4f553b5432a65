// The tensor-parallel position of this rank, handed to every layer's constructor: which block of
// each split it holds (Megatron: heads and MLP/expert features split evenly over the tp group;
// KV heads replicated when tp exceeds them; the vocabulary padded to a multiple of tp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "comm/communicator.h"
#include "models/sharding.h"

namespace weft::models {

struct TpContext {
  int size = 1;
  int rank = 0;
  comm::Communicator* group = nullptr;  // the tp group; null on one rank

  // An even split over the group (every rank its own block).
  [[nodiscard]] TpShard even() const { return {size, rank, 0}; }
  // The vocabulary (embedding and LM head rows): ceil(V/tp) ids per rank, the last ranks holding
  // only the ids below V (shard_extent), so any vocabulary fits any tp.
  [[nodiscard]] TpShard vocab() const { return {size, rank, 0, /*padded=*/true}; }
  // KV heads: min(tp, Hkv) blocks; with tp > Hkv (tp % Hkv == 0) tp/Hkv ranks share each head.
  [[nodiscard]] TpShard kv(int64_t kv_heads) const {
    const int parts = static_cast<int>(std::min<int64_t>(size, kv_heads));
    const int copies = size / parts;
    return {parts, rank / copies, rank % copies};
  }
};

}  // namespace weft::models
