// Creating and initialising parameters: every layer makes its Params here, unsharded for now
// (ShardSpec global shape = local shape, split_dim -1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/param.h"

namespace weft::models {

// A Param named `name` with an uninitialised f32 value of `shape` and no gradient yet.
Param new_param(std::string name, Shape shape);

// Allocates a zero gradient when there is none (inference never allocates gradients).
void ensure_grad(Param& param);

// Fills the value from N(0, std^2), reproducible from (seed, param.name): the same name and seed
// give the same tensor whatever order the parameters are visited in.
void init_normal(Param& param, uint64_t seed, float std);

// Random initialisation of a model: 1-D ".bias" parameters 0, other 1-D parameters (norm
// weights) 1, the rest N(0, 0.02^2) as init_normal.
void init_parameters(const std::vector<Param*>& params, uint64_t seed);

}  // namespace weft::models
