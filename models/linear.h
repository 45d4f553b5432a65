// A linear projection in the Hugging Face layout: y = x @ W^T (+ b), W [out, in]. It owns the
// parameters only; callers keep the input for the backward (q/k/v share one input).
// Under tensor parallelism (Megatron) a column-parallel projection holds a block of the output
// features (W [out/tp, in], b [out/tp]) and a row-parallel one a block of the input features
// (W [out, in/tp], no bias: its outputs are partial sums, see parallel/tensor_parallel.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/param.h"
#include "models/sharding.h"

namespace weft::models {

enum class LinearSplit { kNone, kColumn, kRow };

class Linear {
 public:
  // `name` is the HF module name, e.g. "model.layers.0.self_attn.q_proj"; the parameters are
  // name + ".weight" [out, in] and, with `bias`, name + ".bias" [out]; `in` and `out` are the
  // global sizes, `shard` picks this rank's block along the split.
  Linear(const std::string& name, int64_t in, int64_t out, bool bias,
         LinearSplit split = LinearSplit::kNone, const TpShard& shard = {});

  // x [N, in_local] -> y [N, out_local].
  [[nodiscard]] Tensor forward(const Tensor& x) const;
  // Adds dW += dy^T x and db += colsum(dy). dx [N, in] (when non-null) is written, or added to
  // when `accumulate_dx` (several projections of one input).
  void backward(const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx);

  void collect_params(std::vector<Param*>& out);
  [[nodiscard]] const Param& weight() const { return weight_; }
  [[nodiscard]] int64_t in_features() const { return weight_.value.dim(1); }
  [[nodiscard]] int64_t out_features() const { return weight_.value.dim(0); }

 private:
  Param weight_;  // [out, in]
  Param bias_;    // [out]; value undefined when the projection has no bias
};

}  // namespace weft::models
