#include "models/token_batch.h"

namespace weft::models {

TokenBatch TokenBatch::make(int64_t batch, int64_t len, int64_t offset) {
  TokenBatch b{batch, len, offset, Tensor::empty({len}, DType::kI64)};
  int64_t* p = b.positions.data<int64_t>();
  for (int64_t t = 0; t < len; ++t) p[t] = offset + t;
  return b;
}

}  // namespace weft::models
