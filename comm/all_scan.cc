#include "comm/all_scan.h"

#include <algorithm>

#include "runtime/core/check.h"

namespace weft::comm {

std::vector<ScanPiece> scan_pieces(int64_t n, int64_t blocks, int64_t max_piece) {
  WEFT_CHECK(max_piece > 0) << "max_piece " << max_piece;
  int64_t k = std::clamp<int64_t>(blocks, 1, std::max<int64_t>(n, 1));
  k = std::max(k, n / max_piece + (n % max_piece != 0 ? 1 : 0));  // no overflow near INT64_MAX
  const int64_t base = n / k;
  const int64_t larger = n % k;  // the first `larger` pieces hold one element more
  std::vector<ScanPiece> pieces;
  pieces.reserve(k);
  int64_t begin = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t count = base + (i < larger ? 1 : 0);
    pieces.push_back({begin, count});
    begin += count;
  }
  return pieces;
}

ScanPlan plan_all_scan(const Tensor& local, const Tensor& decay, const Tensor& s_in, int rank,
                       int size, int blocks, bool reverse, int64_t max_piece) {
  for (const Tensor* t : {&local, &decay, &s_in}) {
    WEFT_CHECK(t->defined() && t->dtype() == DType::kF32 && t->shape() == local.shape() &&
               t->device() == local.device())
        << "all_scan: local " << local.str() << ", decay " << decay.str() << " and s_in "
        << s_in.str() << " need one shape, f32, on one device";
  }
  WEFT_CHECK(rank >= 0 && rank < size) << "all_scan: rank " << rank << " of " << size;
  ScanPlan plan;
  const int step = reverse ? -1 : 1;
  if (rank - step >= 0 && rank - step < size) plan.prev = rank - step;
  if (rank + step >= 0 && rank + step < size) plan.next = rank + step;
  plan.pieces = scan_pieces(local.numel(), blocks, max_piece);
  plan.bytes_sent = plan.next < 0 ? 0 : static_cast<int64_t>(local.nbytes());
  return plan;
}

Tensor piece_of(const Tensor& t, const ScanPiece& p) {
  return t.view({t.numel()}).slice(p.begin, p.begin + p.count);
}

}  // namespace weft::comm
