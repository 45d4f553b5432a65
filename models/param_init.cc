#include "models/param_init.h"

#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "kernels/ops.h"
#include "runtime/core/allocator.h"
#include "runtime/core/check.h"

namespace weft::models {

namespace {

// FNV-1a: a stable hash of the name (std::hash may differ between builds).
uint64_t name_hash(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

namespace {

// Tensor::empty(shape, f32, device) for parameter `name`; an allocation failure names the
// parameter.
Tensor allocate_param(const std::string& name, const Shape& shape,
                      Device device = default_device()) {
  try {
    return Tensor::empty(shape, DType::kF32, device);
  } catch (const AllocationError& e) {
    throw AllocationError("parameter " + name + " of shape " + shape_str(shape) + ": " + e.what());
  }
}

}  // namespace

Param new_param(std::string name, Shape shape) {
  Param p;
  p.value = allocate_param(name, shape);
  p.name = std::move(name);
  p.spec.global_shape = std::move(shape);
  return p;
}

Param new_sharded_param(std::string name, Shape global_shape, int split_dim, const TpShard& shard) {
  if (split_dim < 0 || shard.parts == 1) return new_param(std::move(name), std::move(global_shape));
  const ShardExtent extent = shard_extent(global_shape[split_dim], shard);
  WEFT_CHECK_LT(0, extent.length) << name << ": block " << shard.index << " of " << shard.parts
                                  << " holds no entries of dimension " << split_dim;
  Shape local = global_shape;
  local[split_dim] = extent.length;
  Param p;
  p.value = allocate_param(name, local);
  p.name = std::move(name);
  p.spec = {std::move(global_shape), split_dim, "tp", extent.offset, shard.replica};
  return p;
}

void ensure_grad(Param& param) {
  if (!param.grad.defined()) param.grad = Tensor::zeros(param.value.shape());
}

void init_normal(Param& param, uint64_t seed, float std) {
  std::mt19937_64 rng(seed ^ name_hash(param.name));
  std::normal_distribution<float> dist(0.0f, std);
  Tensor whole = allocate_param(param.name, param.spec.global_shape, Device::cpu());
  float* p = whole.data<float>();
  for (int64_t i = 0; i < whole.numel(); ++i) p[i] = dist(rng);
  param.value = take_shard(whole, param.spec, param.value.shape());
}

void init_parameters(const std::vector<Param*>& params, uint64_t seed) {
  for (Param* p : params) {
    if (p->value.ndim() >= 2) {
      init_normal(*p, seed, 0.02f);
    } else {
      kernels::fill_(p->value, absl::EndsWith(p->name, ".bias") ? 0.0f : 1.0f);
    }
  }
}

}  // namespace weft::models
