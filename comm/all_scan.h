// The layout of one All-Scan (communicator.h, all_scan_async), shared by the MPI and NCCL
// backends: the neighbours in the scan's direction, the pieces the flattened state is cut into,
// and the bytes this rank sends.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/tensor.h"

namespace weft::comm {

// Elements [begin, begin + count) of the flattened state.
struct ScanPiece {
  int64_t begin = 0;
  int64_t count = 0;
};

struct ScanPlan {
  int prev = -1;  // the rank S_in comes from; -1 on the first rank of the direction
  int next = -1;  // the rank S_out goes to; -1 on the last rank of the direction
  std::vector<ScanPiece> pieces;
  int64_t bytes_sent = 0;  // the state's bytes, 0 on the last rank
};

// [0, n) cut into `blocks` pieces as even as possible (sizes differ by at most one, larger
// first), after clamping `blocks` to [1, max(n, 1)] and raising it until no piece holds more
// than `max_piece` elements (MPI counts are int). n = 0 gives one empty piece, so that an empty
// state is still one message.
std::vector<ScanPiece> scan_pieces(int64_t n, int64_t blocks, int64_t max_piece);

// Checks that local, decay and s_in are f32 with one shape and one device, and plans rank
// `rank` of `size`'s part of the scan.
ScanPlan plan_all_scan(const Tensor& local, const Tensor& decay, const Tensor& s_in, int rank,
                       int size, int blocks, bool reverse, int64_t max_piece);

// Piece `p` of `t`'s flattened elements, as a 1-D view sharing t's storage.
Tensor piece_of(const Tensor& t, const ScanPiece& p);

}  // namespace weft::comm
