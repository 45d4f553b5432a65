// Central-difference gradients in double, for checking backward kernels.
#pragma once

#include <cstddef>
#include <vector>

namespace weft::testing {

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// d/dx of sum(f(x) * w) by central differences (step 1e-6) in double.
template <typename F>
std::vector<double> numeric_grad(F f, std::vector<double> x, const std::vector<double>& w) {
  constexpr double kStep = 1e-6;
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + kStep;
    const double plus = dot(f(x), w);
    x[i] = saved - kStep;
    const double minus = dot(f(x), w);
    x[i] = saved;
    g[i] = (plus - minus) / (2 * kStep);
  }
  return g;
}

}  // namespace weft::testing
