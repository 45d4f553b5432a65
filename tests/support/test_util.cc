#include "tests/support/test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <vector>

namespace weft::testing {

Tensor random_tensor(const Shape& shape, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = Tensor::empty(shape);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

Tensor random_ids(const Shape& shape, uint64_t seed, int64_t upper) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, upper - 1);
  Tensor t = Tensor::empty(shape, DType::kI64);
  int64_t* p = t.data<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

double max_relative_error(const Tensor& actual, const Tensor& expected, double floor) {
  WEFT_CHECK(actual.shape() == expected.shape()) << actual.str() << " vs " << expected.str();
  const std::vector<float> a = actual.to_floats();
  const std::vector<float> b = expected.to_floats();
  double scale = floor;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
    double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(diff)) diff = INFINITY;
    worst = std::max(worst, diff);
  }
  return worst / scale;
}

::testing::AssertionResult tensors_close(const Tensor& actual, const Tensor& expected, double tol) {
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure()
           << "shape " << shape_str(actual.shape()) << " vs expected " << shape_str(expected.shape());
  }
  const double err = max_relative_error(actual, expected);
  if (err <= tol) return ::testing::AssertionSuccess();
  const std::vector<float> a = actual.to_floats();
  const std::vector<float> b = expected.to_floats();
  size_t worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::fabs(a[i] - b[i]) <= std::fabs(a[worst] - b[worst]))) worst = i;
  }
  return ::testing::AssertionFailure()
         << "relative error " << err << " > " << tol << "; worst at flat index " << worst << ": "
         << a[worst] << " vs expected " << b[worst] << " (" << actual.str() << ")";
}

std::string fixtures_dir() { return WEFT_FIXTURES_DIR; }
std::string build_dir() { return WEFT_BUILD_DIR; }

std::string make_temp_dir(const std::string& prefix) {
  static std::mutex mutex;
  static std::vector<std::string>* dirs = [] {
    auto* v = new std::vector<std::string>();
    std::atexit([] {
      for (const std::string& d : *dirs) std::filesystem::remove_all(d);
    });
    return v;
  }();
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
  WEFT_CHECK(mkdtemp(pattern.data()) != nullptr) << "mkdtemp " << pattern;
  std::lock_guard<std::mutex> lock(mutex);
  dirs->push_back(pattern);
  return pattern;
}

}  // namespace weft::testing
