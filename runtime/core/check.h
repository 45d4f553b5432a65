// Invariant checks. A failed check is a bug in weft, not bad input: it names file:line and
// aborts. Input from users and files is validated with absl::Status instead (see status.h).
#pragma once

#include <sstream>
#include <string>

namespace weft::internal {

// Collects the streamed message and aborts in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return message_; }

 private:
  std::ostringstream message_;
};

// Lets `WEFT_CHECK(x) << "detail"` parse as one expression of type void.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace weft::internal

#define WEFT_CHECK(condition)      \
  (condition) ? (void)0            \
              : ::weft::internal::Voidify() & \
                    ::weft::internal::CheckFailure(__FILE__, __LINE__, #condition).stream()

#define WEFT_CHECK_EQ(a, b) WEFT_CHECK((a) == (b)) << "(" << (a) << " vs " << (b) << ") "
#define WEFT_CHECK_LE(a, b) WEFT_CHECK((a) <= (b)) << "(" << (a) << " vs " << (b) << ") "
#define WEFT_CHECK_LT(a, b) WEFT_CHECK((a) < (b)) << "(" << (a) << " vs " << (b) << ") "
