#include "parallel/expert_placement.h"

#include <algorithm>
#include <numeric>

#include "runtime/core/check.h"

namespace weft::parallel {
namespace {

// group_of[e] for a placement (E/groups consecutive entries per group).
std::vector<int> groups_of(const std::vector<int64_t>& placement, int groups) {
  const auto e_count = static_cast<int64_t>(placement.size());
  std::vector<int> out(e_count);
  for (int64_t i = 0; i < e_count; ++i)
    out[placement[i]] = static_cast<int>(i / (e_count / groups));
  return out;
}

}  // namespace

std::vector<int64_t> co_cluster_experts(const std::vector<double>& together, int64_t num_experts,
                                        int groups) {
  const int64_t e_count = num_experts, size = num_experts / groups;
  WEFT_CHECK_EQ(e_count % groups, 0) << "co_cluster_experts: groups must divide the experts";
  auto weight = [&](int64_t a, int64_t b) { return together[a * e_count + b]; };
  std::vector<double> total(e_count, 0);
  for (int64_t a = 0; a < e_count; ++a) {
    for (int64_t b = 0; b < e_count; ++b) total[a] += a == b ? 0 : weight(a, b);
  }
  std::vector<int64_t> order(e_count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return total[a] > total[b]; });
  std::vector<std::vector<int64_t>> members(groups);
  for (int64_t e : order) {
    int best = -1;
    double best_tie = -1;
    for (int g = 0; g < groups; ++g) {
      if (static_cast<int64_t>(members[g].size()) == size) continue;
      double tie = 0;
      for (int64_t f : members[g]) tie += weight(e, f);
      if (tie > best_tie) {
        best = g;
        best_tie = tie;
      }
    }
    members[best].push_back(e);
  }
  // Swap a in g with b in h while that raises the weight inside groups.
  auto tie_to = [&](int64_t e, int g, int64_t except) {
    double tie = 0;
    for (int64_t f : members[g]) tie += f == e || f == except ? 0 : weight(e, f);
    return tie;
  };
  for (bool improved = true; improved;) {
    improved = false;
    for (int g = 0; g < groups; ++g) {
      for (int h = g + 1; h < groups; ++h) {
        for (int64_t& a : members[g]) {
          for (int64_t& b : members[h]) {
            const double gain =
                tie_to(a, h, b) + tie_to(b, g, a) - tie_to(a, g, a) - tie_to(b, h, b);
            if (gain > 1e-9) {
              std::swap(a, b);
              improved = true;
            }
          }
        }
      }
    }
  }
  for (auto& m : members) std::sort(m.begin(), m.end());
  std::sort(members.begin(), members.end());
  std::vector<int64_t> placement;
  for (const auto& m : members) placement.insert(placement.end(), m.begin(), m.end());
  return placement;
}

double co_located_share(const std::vector<double>& together, const std::vector<int64_t>& placement,
                        int groups) {
  const auto e_count = static_cast<int64_t>(placement.size());
  const std::vector<int> group = groups_of(placement, groups);
  double inside = 0, all = 0;
  for (int64_t a = 0; a < e_count; ++a) {
    for (int64_t b = 0; b < e_count; ++b) {
      if (a == b) continue;
      all += together[a * e_count + b];
      if (group[a] == group[b]) inside += together[a * e_count + b];
    }
  }
  return all > 0 ? inside / all : 0;
}

}  // namespace weft::parallel
