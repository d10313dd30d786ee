// Shared by the GPU parity tests (tests/gpu/*_test.cpp): every CUDA op is run on random inputs
// (never zeros) and compared with its CPU twin by ||out - ref|| / ||ref||. Outputs are poisoned
// (all bytes 0xFF: NaN in fp32/fp16/bf16) before each run, so an element the kernel forgot to
// write fails the comparison instead of passing on leftover memory.
//
// Without a usable CUDA device every test calls PEFTRUN_REQUIRE_GPU() first and reports itself
// SKIPPED (ctest lists it as skipped, never as passed).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda_memory.h"
#include "kernels/device.h"
#include "kernels/half.h"

namespace peftrun::gpu_testing {

// Empty when a device is usable; otherwise why not (for the skip message).
inline std::string gpu_unavailable_reason() {
  static const std::string reason = [] {
    const DeviceInventory inv = query_devices();
    if (!inv.cuda_compiled) return std::string("built without the CUDA backend");
    if (inv.cuda_devices == 0) return inv.note.empty() ? std::string("no CUDA device") : inv.note;
    return std::string();
  }();
  return reason;
}

#define PEFTRUN_REQUIRE_GPU()                                                               \
  do {                                                                                      \
    const std::string peftrun_why_ = ::peftrun::gpu_testing::gpu_unavailable_reason();      \
    if (!peftrun_why_.empty()) GTEST_SKIP() << "GPU parity test skipped: " << peftrun_why_; \
  } while (0)

// Uniform(-scale, scale) values, never exactly zero, from a fixed seed.
inline std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) {
    do {
      x = dist(rng);
    } while (x == 0.0f);
  }
  return v;
}

// fp16 copies of `v` (round to nearest even) and the exact fp32 values they represent, so the
// CPU reference sees precisely what the GPU sees.
inline std::vector<half_bits> to_half(const std::vector<float>& v) {
  std::vector<half_bits> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = float_to_half(v[i]);
  return h;
}
inline std::vector<float> from_half(const std::vector<half_bits>& h) {
  std::vector<float> v(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) v[i] = half_to_float(h[i]);
  return v;
}

// Device copy of host data.
template <typename T>
cuda::DeviceBuffer<T> to_device(const std::vector<T>& host) {
  cuda::DeviceBuffer<T> d(host.size());
  d.upload(host.data());
  return d;
}

// A device buffer of n elements filled with 0xFF bytes (NaN for every float type we use).
template <typename T>
cuda::DeviceBuffer<T> poisoned(std::size_t n) {
  cuda::DeviceBuffer<T> d(n);
  cuda::device_memset(d.data(), 0xFF, d.bytes());
  return d;
}

template <typename T>
std::vector<T> to_host(const cuda::DeviceBuffer<T>& d) {
  cuda::synchronize();
  std::vector<T> h(d.size());
  d.download(h.data());
  return h;
}

// ||out - ref|| / ||ref|| in double; infinite when `out` holds any non-finite value (a poisoned
// element that was never written) or the sizes differ.
template <typename A, typename B>
double rel_error(const std::vector<A>& out, const std::vector<B>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double o = static_cast<double>(out[i]), r = static_cast<double>(ref[i]);
    if (!std::isfinite(o)) return INFINITY;
    num += (o - r) * (o - r);
    den += r * r;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Per-dtype tolerances for ||out - ref|| / ||ref||: fp32 math vs. the CPU's fp32/fp64 math
// differs only by summation order; fp16/bf16 storage of activations dominates otherwise.
inline constexpr double kTolFp32 = 1e-5;
inline constexpr double kTolFp16 = 2e-3;
inline constexpr double kTolBf16 = 1.6e-2;

}  // namespace peftrun::gpu_testing
