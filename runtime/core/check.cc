#include "runtime/core/check.h"

#include <cstdio>
#include <cstdlib>

namespace weft::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  message_ << file << ":" << line << ": check failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "weft: internal error: %s\n", message_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace weft::internal
