// Shared test helpers: seeded random tensors, tolerant comparison, fixture paths.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "runtime/core/tensor.h"

namespace weft::testing {

// f32 CPU tensor of uniform values in [lo, hi), reproducible from `seed`.
Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
// i64 CPU tensor of uniform integers in [0, upper).
Tensor random_ids(const Shape& shape, uint64_t seed, int64_t upper);

// max_i |a_i - b_i| / max(max_i |b_i|, floor): one relative error for the whole tensor, so that
// tiny entries do not dominate. Shapes must match.
double max_relative_error(const Tensor& actual, const Tensor& expected, double floor = 1e-6);

// gtest assertion: same shape and max_relative_error <= tol; on failure names the worst entry.
::testing::AssertionResult tensors_close(const Tensor& actual, const Tensor& expected,
                                         double tol = 1e-5);

std::string fixtures_dir();  // tests/fixtures in the source tree
std::string build_dir();     // the CMake build directory (holds the `weft` binary)
// A fresh empty directory under the system temp dir, removed at process exit.
std::string make_temp_dir(const std::string& prefix);

}  // namespace weft::testing

#define EXPECT_TENSORS_CLOSE(actual, expected, tol) \
  EXPECT_TRUE(::weft::testing::tensors_close((actual), (expected), (tol)))
