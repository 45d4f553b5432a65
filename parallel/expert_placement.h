// Expert grouping for Speculative MoE (docs/algorithms.md "Speculative MoE"): experts that
// tokens often choose together go to the same ep rank, so a token's choices need fewer
// destinations (and speculative dispatch sends one row per destination).
#pragma once

#include <cstdint>
#include <vector>

namespace weft::parallel {

// Balanced co-clustering of E experts into `groups` groups of E/groups each, maximising the
// weight inside groups: together[e * E + f] = tokens that chose both e and f (symmetric).
// Greedy seeding (experts by falling total weight, each into the open group it is most tied
// to), then pairwise swaps between groups while one gains. Returns the placement: group 0's
// experts ascending, then group 1's, ... (groups ordered by their smallest expert).
std::vector<int64_t> co_cluster_experts(const std::vector<double>& together, int64_t num_experts,
                                        int groups);

// The share of co-chosen pairs (weight of `together`) that `placement` puts on one rank.
double co_located_share(const std::vector<double>& together, const std::vector<int64_t>& placement,
                        int groups);

}  // namespace weft::parallel
