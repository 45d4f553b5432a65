#include "parallel/mesh.h"

#include "absl/strings/str_cat.h"
#include "runtime/core/check.h"

namespace weft::parallel {
namespace {

// The stage-local index L = tp + TP*(sp + SP*dp) and its inverse.
int local_index(const Coord& c, const ParallelDims& d) {
  return c.tp + d.tp * (c.sp + d.sp * c.dp);
}

int rank_of(const Coord& c, const ParallelDims& d) {
  return local_index(c, d) + d.tp * d.sp * d.dp * c.pp;
}

// Coordinates of the rank whose stage-local index is `local` on stage `pp`.
Coord coord_of_local(int local, int pp, const ParallelDims& d) {
  return coord_of(local + d.tp * d.sp * d.dp * pp, d);
}

// (position in the group, size of the group) along `g`, and the coordinate that moves.
int group_position(const Coord& c, Group g, const ParallelDims& d) {
  switch (g) {
    case Group::kTp:
      return c.tp;
    case Group::kSp:
      return c.sp;
    case Group::kDp:
      return c.dp;
    case Group::kPp:
      return c.pp;
    case Group::kTpSp:
      return c.tp + d.tp * c.sp;
    case Group::kDpSp:
      return c.sp + d.sp * c.dp;
    case Group::kEtp:
      return c.etp;
    case Group::kEp:
      return c.ep;
    case Group::kEdp:
      return c.edp;
  }
  return 0;
}

int group_size(Group g, const ParallelDims& d) {
  switch (g) {
    case Group::kTp:
      return d.tp;
    case Group::kSp:
      return d.sp;
    case Group::kDp:
      return d.dp;
    case Group::kPp:
      return d.pp;
    case Group::kTpSp:
      return d.tp * d.sp;
    case Group::kDpSp:
      return d.dp * d.sp;
    case Group::kEtp:
      return d.etp;
    case Group::kEp:
      return d.ep;
    case Group::kEdp:
      return d.edp();
  }
  return 1;
}

// The rank at position `i` of `base`'s group along `g`.
int member(const Coord& base, Group g, int i, const ParallelDims& d) {
  Coord c = base;
  switch (g) {
    case Group::kTp:
      c.tp = i;
      break;
    case Group::kSp:
      c.sp = i;
      break;
    case Group::kDp:
      c.dp = i;
      break;
    case Group::kPp:
      c.pp = i;
      break;
    case Group::kTpSp:
      c.tp = i % d.tp;
      c.sp = i / d.tp;
      break;
    case Group::kDpSp:
      c.sp = i % d.sp;
      c.dp = i / d.sp;
      break;
    case Group::kEtp:
    case Group::kEp:
    case Group::kEdp: {
      int etp = base.etp, ep = base.ep, edp = base.edp;
      (g == Group::kEtp ? etp : g == Group::kEp ? ep : edp) = i;
      return rank_of(coord_of_local(etp + d.etp * (ep + d.ep * edp), base.pp, d), d);
    }
  }
  return rank_of(c, d);
}

}  // namespace

std::string ParallelDims::str() const {
  return absl::StrCat("dp=", dp, " pp=", pp, " tp=", tp, " sp=", sp, " ep=", ep, " etp=", etp);
}

absl::StatusOr<ParallelDims> resolve_dims(int world_size, int tp, int pp, int sp, int ep, int etp) {
  for (auto [value, flag] : {std::pair{tp, "--tp"}, std::pair{pp, "--pp"}, std::pair{sp, "--sp"},
                             std::pair{ep, "--ep"}, std::pair{etp, "--etp"}}) {
    if (value < 1)
      return absl::InvalidArgumentError(absl::StrCat(flag, " ", value, " must be >= 1"));
  }
  const int model_parallel = tp * pp * sp;
  if (world_size % model_parallel != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--tp ", tp, " x --pp ", pp, " x --sp ", sp,
                                                   " = ", model_parallel,
                                                   " does not divide the world size ", world_size));
  }
  ParallelDims d{
      .dp = world_size / model_parallel, .pp = pp, .tp = tp, .sp = sp, .ep = ep, .etp = etp};
  if ((d.tp * d.sp * d.dp) % (ep * etp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ep ", ep, " x --etp ", etp, " = ", ep * etp,
        " does not divide tp*sp*dp = ", d.tp * d.sp * d.dp, " (the ranks of one pipeline stage)"));
  }
  return d;
}

const char* group_name(Group group) {
  switch (group) {
    case Group::kTp:
      return "tp";
    case Group::kSp:
      return "sp";
    case Group::kDp:
      return "dp";
    case Group::kPp:
      return "pp";
    case Group::kTpSp:
      return "tp_sp";
    case Group::kDpSp:
      return "dp_sp";
    case Group::kEtp:
      return "etp";
    case Group::kEp:
      return "ep";
    case Group::kEdp:
      return "edp";
  }
  return "?";
}

Coord coord_of(int rank, const ParallelDims& d) {
  Coord c;
  c.tp = rank % d.tp;
  c.sp = (rank / d.tp) % d.sp;
  c.dp = (rank / (d.tp * d.sp)) % d.dp;
  c.pp = rank / (d.tp * d.sp * d.dp);
  const int local = local_index(c, d);
  c.etp = local % d.etp;
  c.ep = (local / d.etp) % d.ep;
  c.edp = local / (d.etp * d.ep);
  return c;
}

std::vector<int> group_ranks(int rank, Group group, const ParallelDims& dims) {
  const Coord base = coord_of(rank, dims);
  std::vector<int> ranks;
  for (int i = 0; i < group_size(group, dims); ++i) ranks.push_back(member(base, group, i, dims));
  return ranks;
}

Mesh::Mesh(comm::Communicator& world, const ParallelDims& dims)
    : world_(world), dims_(dims), coord_(coord_of(world.rank(), dims)) {}

std::unique_ptr<Mesh> Mesh::create(comm::Communicator& world, const ParallelDims& dims) {
  WEFT_CHECK_EQ(world.size(), dims.world_size()) << dims.str();
  std::unique_ptr<Mesh> mesh(new Mesh(world, dims));
  for (Group g : kAllGroups) {
    // Color: the group's first rank (identifies it); key: the position inside it.
    const int color = group_ranks(world.rank(), g, dims).front();
    const int key = group_position(mesh->coord_, g, dims);
    mesh->groups_[static_cast<int>(g)] = world.split(color, key, group_name(g));
  }
  return mesh;
}

std::vector<const comm::Communicator*> Mesh::all_groups() const {
  std::vector<const comm::Communicator*> out;
  for (const auto& g : groups_) out.push_back(g.get());
  return out;
}

}  // namespace weft::parallel
