// Next-token cross-entropy: position t of sequence b predicts tokens[b, t+1]; the last position
// of each sequence predicts nothing. The loss is a SUM over predicted positions (callers divide
// by the global count, DESIGN.md "Data flow").
#pragma once

#include <cstdint>

#include "runtime/core/tensor.h"

namespace weft::models {

// tokens [B, T] -> targets [B*T] i64: tokens[b, t+1], or -1 at t = T-1.
[[nodiscard]] Tensor next_token_targets(const Tensor& tokens);

// logits [N, V], targets [N] -> sum over labelled rows of (lse - logit[target]); writes lse [N].
[[nodiscard]] double cross_entropy_sum(const Tensor& logits, const Tensor& targets, Tensor& lse);

// d(loss_sum * loss_scale)/dlogits, written into dlogits [N, V] (which may be `logits` itself
// when the caller no longer needs the logits).
void cross_entropy_grad(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                        float loss_scale, Tensor& dlogits);

}  // namespace weft::models
