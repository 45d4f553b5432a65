#include "comm/report.h"

#include <mpi.h>

#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "comm/mpi_check.h"

namespace weft::comm {
namespace {

// A JSON string literal.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      absl::StrAppend(&out, "\\", std::string(1, c));
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

std::string stats_json(const CallStats& s) {
  return absl::StrCat("\"calls\": ", s.calls, ", \"bytes_sent\": ", s.bytes_sent);
}

// {"<kind>": {"calls": n, "bytes_sent": b}, ...}
std::string by_kind_json(const std::map<std::string, CallStats>& stats) {
  std::vector<std::string> kinds;
  for (const auto& [kind, s] : stats) {
    kinds.push_back(absl::StrCat(quote(kind), ": {", stats_json(s), "}"));
  }
  return absl::StrCat("{", absl::StrJoin(kinds, ", "), "}");
}

// This rank's entry of "ranks".
std::string rank_json(int rank, const std::vector<const Communicator*>& groups) {
  std::set<std::string> names;
  std::vector<std::string> entries;
  for (const Communicator* group : groups) {
    WEFT_CHECK(group != nullptr) << "null group in the comm report";
    WEFT_CHECK(names.insert(group->name()).second)
        << "two groups named " << group->name() << " in the comm report";
    const std::map<std::string, CallStats> stats = group->stats();
    entries.push_back(absl::StrCat(quote(group->name()), ": {", stats_json(total(stats)),
                                   ", \"by_kind\": ", by_kind_json(stats), "}"));
  }
  return absl::StrCat("{\"rank\": ", rank, ", \"groups\": {", absl::StrJoin(entries, ", "), "}}");
}

// Every rank's `text`, concatenated in world order on rank 0 (empty elsewhere).
std::vector<std::string> gather_to_root(const std::string& text, int world_rank, int world_size) {
  int length = static_cast<int>(text.size());
  std::vector<int> lengths(world_size);
  WEFT_MPI_CHECK(MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, MPI_COMM_WORLD));
  std::vector<int> offsets(world_size, 0);
  for (int r = 1; r < world_size; ++r) offsets[r] = offsets[r - 1] + lengths[r - 1];
  std::string all(world_rank == 0 ? offsets.back() + lengths.back() : 0, '\0');
  WEFT_MPI_CHECK(MPI_Gatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(),
                             offsets.data(), MPI_CHAR, 0, MPI_COMM_WORLD));
  std::vector<std::string> parts;
  if (world_rank != 0) return parts;
  for (int r = 0; r < world_size; ++r) parts.push_back(all.substr(offsets[r], lengths[r]));
  return parts;
}

}  // namespace

absl::Status write_comm_report(Communicator& world, const std::vector<const Communicator*>& groups,
                               const std::string& path) {
  const std::string mine = rank_json(world.rank(), groups);
  int world_rank = 0;
  int world_size = 0;
  WEFT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  WEFT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
  WEFT_CHECK_EQ(world.size(), world_size) << "the comm report's world must span MPI_COMM_WORLD";
  const std::vector<std::string> ranks = gather_to_root(mine, world_rank, world_size);

  int written = 1;
  if (world_rank == 0) {
    std::ofstream file(path);
    file << "{\"ranks\": [\n  " << absl::StrJoin(ranks, ",\n  ") << "\n]}\n";
    file.close();
    written = file.good() ? 1 : 0;
  }
  WEFT_MPI_CHECK(MPI_Bcast(&written, 1, MPI_INT, 0, MPI_COMM_WORLD));
  if (!written) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write the comm report to ", path));
  }
  return absl::OkStatus();
}

}  // namespace weft::comm
