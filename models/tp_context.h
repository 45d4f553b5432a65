// The tensor-parallel position of this rank, handed to every layer's constructor: which block of
// each split it holds (Megatron: heads, MLP/expert features and the vocabulary split evenly over
// the tp group; KV heads replicated when tp exceeds them).
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
  // KV heads: min(tp, Hkv) blocks; with tp > Hkv (tp % Hkv == 0) tp/Hkv ranks share each head.
  [[nodiscard]] TpShard kv(int64_t kv_heads) const {
    const int parts = static_cast<int>(std::min<int64_t>(size, kv_heads));
    const int copies = size / parts;
    return {parts, rank / copies, rank % copies};
  }
};

}  // namespace weft::models
