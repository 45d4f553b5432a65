// Creating and initialising parameters: every layer makes its Params here, whole or as one
// rank's tensor-parallel shard.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/param.h"
#include "models/sharding.h"

namespace weft::models {

// A Param named `name` with an uninitialised f32 value of `shape` and no gradient yet.
Param new_param(std::string name, Shape shape);
// This rank's block `shard` of a tensor of `global_shape` split along `split_dim` over "tp"
// (split_dim -1 or one part: the whole tensor), cut by shard_extent.
Param new_sharded_param(std::string name, Shape global_shape, int split_dim, const TpShard& shard);

// Allocates a zero gradient when there is none (inference never allocates gradients).
void ensure_grad(Param& param);

// Fills the value from N(0, std^2), reproducible from (seed, param.name): the same name and seed
// give the same global tensor whatever order the parameters are visited in and however it is
// sharded (the whole tensor is drawn, this rank's block kept).
void init_normal(Param& param, uint64_t seed, float std);

// Random initialisation of a model: 1-D ".bias" parameters 0, other 1-D parameters (norm
// weights) 1, the rest N(0, 0.02^2) as init_normal.
void init_parameters(const std::vector<Param*>& params, uint64_t seed);

}  // namespace weft::models
