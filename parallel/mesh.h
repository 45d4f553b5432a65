// Mesh: the one place that maps ranks to parallel groups (Megatron-Core's parallel_state, as an
// object). Rank order puts tp fastest, then sp, then dp, then pp:
//
//   rank = tp + TP * (sp + SP * (dp + DP * pp))
//
// Example, 8 ranks with tp=2, sp=1, dp=2, pp=2:
//   rank:  0 1 2 3 4 5 6 7
//   tp:    0 1 0 1 0 1 0 1     tp groups {0,1} {2,3} {4,5} {6,7}
//   dp:    0 0 1 1 0 0 1 1     dp groups {0,2} {1,3} {4,6} {5,7}
//   pp:    0 0 0 0 1 1 1 1     pp groups {0,4} {1,5} {2,6} {3,7}
//
// MoE folding: inside one pipeline stage the same TP*SP*DP ranks are viewed again as
// etp x ep x edp (etp fastest). With L = tp + TP*(sp + SP*dp), the stage-local index:
//   etp = L % ETP,  ep = (L / ETP) % EP,  edp = L / (ETP*EP)      (ETP*EP divides TP*SP*DP)
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"

namespace weft::parallel {

struct ParallelDims {
  int dp = 1;
  int pp = 1;
  int tp = 1;
  int sp = 1;
  int ep = 1;
  int etp = 1;

  [[nodiscard]] int world_size() const { return dp * pp * tp * sp; }
  [[nodiscard]] int edp() const { return tp * sp * dp / (ep * etp); }
  [[nodiscard]] std::string str() const;  // "dp=2 pp=1 tp=2 sp=1 ep=1 etp=1"
};

// dp = world / (tp*pp*sp). Errors name the flag and the value: a degree < 1, a product that
// does not divide the world size, or an expert view (ep*etp) that does not divide tp*sp*dp.
absl::StatusOr<ParallelDims> resolve_dims(int world_size, int tp, int pp, int sp, int ep, int etp);

// kDpSp: the ranks with the same tp and pp coordinates (sp fastest, then dp), i.e. every
// replica of this rank's weights: gradients of weights replicated across dp and sp are reduced
// over it, and ZeRO-1 shards the optimizer state over it.
enum class Group { kTp, kSp, kDp, kPp, kTpSp, kDpSp, kEtp, kEp, kEdp };
inline constexpr std::array<Group, 9> kAllGroups = {Group::kTp,  Group::kSp,   Group::kDp,
                                                    Group::kPp,  Group::kTpSp, Group::kDpSp,
                                                    Group::kEtp, Group::kEp,   Group::kEdp};
// "tp", "sp", "dp", "pp", "tp_sp", "dp_sp", "etp", "ep", "edp": the names in --comm-report.
const char* group_name(Group group);

// A rank's coordinates.
struct Coord {
  int tp = 0;
  int sp = 0;
  int dp = 0;
  int pp = 0;
  int etp = 0;
  int ep = 0;
  int edp = 0;
};

Coord coord_of(int rank, const ParallelDims& dims);
// The world ranks of `rank`'s group of kind `group`, in group order (group rank i = entry i).
std::vector<int> group_ranks(int rank, Group group, const ParallelDims& dims);

class Mesh {
 public:
  // Collective over `world` (whose size must be dims.world_size()): splits every group.
  static std::unique_ptr<Mesh> create(comm::Communicator& world, const ParallelDims& dims);

  [[nodiscard]] const ParallelDims& dims() const { return dims_; }
  [[nodiscard]] const Coord& coord() const { return coord_; }
  [[nodiscard]] int rank() const { return world_.rank(); }
  [[nodiscard]] comm::Communicator& world() const { return world_; }
  [[nodiscard]] comm::Communicator& group(Group g) const { return *groups_[static_cast<int>(g)]; }
  [[nodiscard]] comm::Communicator& tp() const { return group(Group::kTp); }
  [[nodiscard]] comm::Communicator& sp() const { return group(Group::kSp); }
  [[nodiscard]] comm::Communicator& dp() const { return group(Group::kDp); }
  [[nodiscard]] comm::Communicator& pp() const { return group(Group::kPp); }
  [[nodiscard]] comm::Communicator& tp_sp() const { return group(Group::kTpSp); }
  [[nodiscard]] comm::Communicator& dp_sp() const { return group(Group::kDpSp); }
  [[nodiscard]] comm::Communicator& etp() const { return group(Group::kEtp); }
  [[nodiscard]] comm::Communicator& ep() const { return group(Group::kEp); }
  [[nodiscard]] comm::Communicator& edp() const { return group(Group::kEdp); }
  // Every group, for --comm-report.
  [[nodiscard]] std::vector<const comm::Communicator*> all_groups() const;

 private:
  Mesh(comm::Communicator& world, const ParallelDims& dims);

  comm::Communicator& world_;
  ParallelDims dims_;
  Coord coord_;
  std::array<std::unique_ptr<comm::Communicator>, kAllGroups.size()> groups_;
};

}  // namespace weft::parallel
