// Finite-difference gradient checking in double precision, shared by the kernel, DoRA and
// AdaLoRA tests: every backward is compared with central differences of a scalar loss.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace peftrun::testing_support {

using Vec = std::vector<double>;

inline constexpr double kStep = 1e-6;  // central-difference step

// Normal(0, stddev) values; fixed seeds keep every run identical.
inline Vec randn(std::size_t n, std::uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  Vec v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline double norm(const Vec& a) {
  return std::sqrt(dot(a, a));
}

// Central-difference gradient of `loss` (which must read the current contents of `x`) compared
// with `analytic`: returns ||num - ana|| / ||num||. x is restored exactly on return. The divisor
// is the step actually taken ((x+h) - (x-h) in floating point), not the nominal 2h.
inline double finite_difference_rel_error(Vec& x, const Vec& analytic,
                                          const std::function<double()>& loss, double h = kStep) {
  EXPECT_EQ(x.size(), analytic.size());
  Vec num(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    const double up = saved + h;
    const double down = saved - h;
    x[i] = up;
    const double lp = loss();
    x[i] = down;
    const double lm = loss();
    x[i] = saved;
    num[i] = (lp - lm) / (up - down);
  }
  Vec diff(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) diff[i] = num[i] - analytic[i];
  const double num_norm = norm(num);
  EXPECT_GT(num_norm, 1e-3) << "degenerate check: numerical gradient is ~0";
  return norm(diff) / num_norm;
}

}  // namespace peftrun::testing_support
