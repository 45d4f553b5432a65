// Rows of a batch laid out sequence by sequence (row b*T + t of B sequences of T positions): the
// rows of a range of positions in every sequence, as StreamBP's chunks take them.
#pragma once

#include <cstdint>

#include "runtime/core/tensor.h"

namespace weft::models {

// The rows of positions [a, e) of every sequence of x [B*T, ...] -> [B*(e-a), ...] (a view when
// B == 1, else a copy).
[[nodiscard]] Tensor position_rows(const Tensor& x, int64_t batch, int64_t len, int64_t a,
                                   int64_t e);
// x's rows of positions [a, e) += part [B*(e-a), ...].
void add_position_rows(Tensor& x, int64_t batch, int64_t len, int64_t a, int64_t e,
                       const Tensor& part);

}  // namespace weft::models
