// Counter-based random numbers: every value is a pure function of (key, counter), so results do
// not depend on thread count, call order, rank count or resume point. The same functions can run
// in a CUDA kernel later (they are PEFTRUN_HD).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/host_device.h"

namespace peftrun {

PEFTRUN_HD std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Derives a stream key from a parent key and a tag (e.g. seed -> "layer 3, q_proj, lora_A").
PEFTRUN_HD std::uint64_t derive_key(std::uint64_t key, std::uint64_t tag) {
  return splitmix64(key ^ splitmix64(tag + 0x632be59bd9b4e019ull));
}

// Uniform in [0, 1) with 53 random bits.
PEFTRUN_HD double uniform01(std::uint64_t key, std::uint64_t counter) {
  return static_cast<double>(splitmix64(key ^ splitmix64(counter)) >> 11) * 0x1.0p-53;
}

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
