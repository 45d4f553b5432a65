// Status helpers for API edges (files, configs, user input). Messages name the value and what
// was expected: "--tp 3 does not divide num_attention_heads 8".
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define WEFT_STATUS_CONCAT_INNER(a, b) a##b
#define WEFT_STATUS_CONCAT(a, b) WEFT_STATUS_CONCAT_INNER(a, b)

#define WEFT_RETURN_IF_ERROR(expr)                  \
  do {                                              \
    ::absl::Status weft_status_ = (expr);           \
    if (!weft_status_.ok()) return weft_status_;    \
  } while (0)

#define WEFT_ASSIGN_OR_RETURN(lhs, expr) \
  WEFT_ASSIGN_OR_RETURN_IMPL(WEFT_STATUS_CONCAT(weft_statusor_, __LINE__), lhs, expr)

#define WEFT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

namespace weft {

inline absl::Status invalid_argument(auto&&... parts) {
  return absl::InvalidArgumentError(absl::StrCat(parts...));
}

}  // namespace weft
