#include "models/position_rows.h"

#include "kernels/ops.h"
#include "runtime/core/status.h"

namespace weft::models {

Tensor position_rows(const Tensor& x, int64_t batch, int64_t len, int64_t a, int64_t e) {
  WEFT_CHECK_EQ(x.dim(0), batch * len) << "rows of " << x.str() << " for " << batch << "x" << len;
  WEFT_CHECK(0 <= a && a < e && e <= len) << "positions [" << a << ", " << e << ") of " << len;
  if (batch == 1) return x.slice(a, e);
  const int64_t c = e - a;
  Shape shape = x.shape();
  shape[0] = batch * c;
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  for (int64_t b = 0; b < batch; ++b) {
    out.slice(b * c, (b + 1) * c).copy_from(x.slice(b * len + a, b * len + e));
  }
  return out;
}

void add_position_rows(Tensor& x, int64_t batch, int64_t len, int64_t a, int64_t e,
                       const Tensor& part) {
  const int64_t c = e - a;
  WEFT_CHECK_EQ(part.dim(0), batch * c) << "rows of " << part.str() << " for positions " << a
                                        << ".." << e << " of " << batch << " sequences";
  for (int64_t b = 0; b < batch; ++b) {
    Tensor rows = x.slice(b * len + a, b * len + e);
    kernels::add_(rows, part.slice(b * c, (b + 1) * c));
  }
}

}  // namespace weft::models
