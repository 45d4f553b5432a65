// Next-token cross-entropy: position t of sequence b predicts tokens[b, t+1]; the last position
// of each sequence predicts nothing. The loss is a SUM over predicted positions (callers divide
// by the global count, docs/architecture.md "Data flow"). Vocabulary-parallel: with logits split
// over a tp group, the row's log-sum-exp and target logit are combined over the group (all-reduce
// of the max, of the sum of exp(lse_r - max) and of the target logit), never gathering the logits.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "runtime/core/tensor.h"

namespace weft::models {

// tokens [B, T] -> targets [B*T] i64: tokens[b, t+1], or -1 at t = T-1.
[[nodiscard]] Tensor next_token_targets(const Tensor& tokens);

// logits [N, V_local] of vocabulary ids [vocab_start, vocab_start + V_local), targets [N] ->
// sum over labelled rows of (lse - logit[target]); writes the global lse [N]. tp: the group the
// vocabulary is split over (null: the logits are whole). Collective over tp.
[[nodiscard]] double cross_entropy_sum(const Tensor& logits, const Tensor& targets,
                                       int64_t vocab_start, comm::Communicator* tp, Tensor& lse);

// d(loss_sum * loss_scale)/dlogits, written into dlogits [N, V_local] (which may be `logits`
// itself when the caller no longer needs the logits); lse is the global one.
void cross_entropy_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                        const Tensor& lse, float loss_scale, Tensor& dlogits);

}  // namespace weft::models
