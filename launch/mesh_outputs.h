// Bringing what a mesh computed to world rank 0 for output files: rows of a batch split over
// dp, vocabulary blocks split over tp, parameters spread over tp and pipeline stages. Uses
// point-to-point messages on the world communicator (not counted in any mesh group's traffic).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "parallel/mesh.h"
#include "runtime/core/tensor.h"

namespace weft::cli {

// The whole [B, T, V] logits on world rank 0 (undefined elsewhere). `local_blocks`: the logits
// [b_i, c, V_r] of each micro-batch this rank's last pipeline stage produced (its vocabulary
// block, models::shard_extent(vocab, tp.vocab()); empty on other stages), for this rank's
// `positions` of the T (all of them, or its share under --sp); dp rank d holds `rows_of_dp[d]` rows
// of the batch, in dp order. Collective over the world.
Tensor gather_logits(const parallel::Mesh& mesh, const std::vector<Tensor>& local_blocks,
                     const std::vector<int64_t>& positions, int64_t seq_len, int64_t vocab,
                     const std::vector<int64_t>& rows_of_dp);

// Every parameter's whole tensor of `pick` (value or grad) by HF name on world rank 0 (empty
// elsewhere). Collective over the world.
std::map<std::string, Tensor> gather_parameters(const parallel::Mesh& mesh,
                                                const std::vector<models::Param*>& params,
                                                Tensor models::Param::*pick);

}  // namespace weft::cli
