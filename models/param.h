// A model parameter: its Hugging Face name, value, gradient, and how it is sharded.
#pragma once

#include <string>

#include "runtime/core/tensor.h"

namespace weft::models {

// How this rank's `value` relates to the whole tensor named `name`: it is the box starting at
// `offset` along split_dim, as long as the value is there (the same on every rank but for the
// vocabulary's last ranks, models::shard_extent). The same spec drives loading, checkpoint
// save/resharding and export. Unsharded: split_dim = -1.
struct ShardSpec {
  Shape global_shape;
  int split_dim = -1;  // dimension split across `group`, or -1 when replicated
  std::string group;   // mesh group the split runs over ("tp", "ep", ...), empty if none
  int64_t offset = 0;  // start of this shard along split_dim
  // Several ranks of `group` may hold the same slice (KV heads replicated when tp exceeds
  // them): replica numbers them 0, 1, ...; their gradients are summed, replica 0 is saved.
  int replica = 0;
};

struct Param {
  std::string name;  // HF name, e.g. "model.layers.0.self_attn.q_proj.weight"
  Tensor value;      // this rank's shard, f32
  Tensor grad;       // same shape as value, f32; accumulated by backward()
  ShardSpec spec;
  // AdamW decays parameters with two or more dimensions only (docs/architecture.md).
  [[nodiscard]] bool decays() const { return spec.global_shape.size() >= 2; }
  // An expert of an expert-parallel MoE layer: hosted by its ep rank (split over etp when the
  // group is "etp"), replicated over edp rather than dp.
  [[nodiscard]] bool expert_parallel() const { return spec.group == "ep" || spec.group == "etp"; }
};

}  // namespace weft::models
