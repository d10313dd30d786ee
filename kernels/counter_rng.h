// Counter-based random numbers: every value is a pure function of (key, counter), so results do
// not depend on thread count, call order, rank count or resume point. PEFTRUN_HD: the CPU and
// the CUDA kernels draw the very same numbers (e.g. identical dropout masks on both sides).
// runtime/rng.h builds the stream keys and tags on top of these.
#pragma once

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

// Uniform in [0, 1) with 53 random bits (the conversion is exact, so host and device agree).
PEFTRUN_HD double uniform01(std::uint64_t key, std::uint64_t counter) {
  return static_cast<double>(splitmix64(key ^ splitmix64(counter)) >> 11) * 0x1.0p-53;
}

}  // namespace peftrun
