#include "parallel/sp_layout.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "runtime/core/check.h"

namespace weft::parallel {

int64_t SpLayout::multiple() const { return std::lcm<int64_t>(2 * groups, ranks); }

std::vector<int64_t> SpLayout::positions(int64_t seq_len, int rank) const {
  WEFT_CHECK(check_sp_split(*this, seq_len, "SpLayout").ok()) << seq_len;
  WEFT_CHECK(ranks % groups == 0 && rank >= 0 && rank < ranks) << ranks << " " << groups;
  const int64_t c = seq_len / ranks, chunk = seq_len / (2 * groups);
  const int members = ranks / groups;
  const int64_t group = rank / members, member = rank % members;
  std::vector<int64_t> out;
  out.reserve(c);
  for (int64_t i = member * c; i < (member + 1) * c; ++i) {
    // Index i of the group's T/g tokens: chunk `group` first, then chunk 2g-1-group.
    const int64_t first = i < chunk ? group : 2 * groups - 1 - group;
    out.push_back(first * chunk + i % chunk);
  }
  return out;
}

std::vector<SpLayout::Run> SpLayout::runs(int64_t seq_len, int rank) const {
  const std::vector<int64_t> pos = positions(seq_len, rank);
  std::vector<Run> out;
  for (int64_t i = 0; i < static_cast<int64_t>(pos.size()); ++i) {
    if (out.empty() || pos[i] != out.back().start + out.back().len) {
      out.push_back({i, pos[i], 0});
    }
    ++out.back().len;
  }
  return out;
}

absl::Status check_sp_split(const SpLayout& layout, int64_t seq_len, const std::string& what) {
  const int64_t multiple = layout.multiple();
  if (seq_len <= 0 || seq_len % multiple != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " with --sp ", layout.ranks, " needs a sequence length divisible by ", multiple,
        layout.contiguous() ? "" : " (zigzag: 2 chunks per ring rank)", ", got ", seq_len));
  }
  return absl::OkStatus();
}

}  // namespace weft::parallel
