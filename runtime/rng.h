// Counter-based random numbers: every value is a pure function of (key, counter), so results do
// not depend on thread count, call order, rank count or resume point. The core (splitmix64,
// derive_key, uniform01) lives in kernels/counter_rng.h, PEFTRUN_HD, so CUDA kernels draw the
// same numbers; this header adds what only the host needs.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/counter_rng.h"

namespace peftrun {

// Standard normal by Box-Muller over two independent uniforms.
inline double normal01(std::uint64_t key, std::uint64_t counter) {
  const double u1 = 1.0 - uniform01(key, 2 * counter);  // (0, 1]: log is finite
  const double u2 = uniform01(key, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Stable tags for derive_key, so a stream never changes meaning between versions.
enum class RngTag : std::uint64_t {
  kBaseInit = 1,
  kAdapterInit = 2,
  kDropout = 3,
};

}  // namespace peftrun
