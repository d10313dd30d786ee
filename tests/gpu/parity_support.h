// What the parity cases (tests/gpu/*_cases.h) share: storing host floats in a device dtype and
// reading them back, and per-dtype tolerances.
//
// Every case is a function template over an environment `Env` that owns the memory and runs the
// op, so one case body serves two runners:
//  - GpuEnv (tests/gpu/gpu_env.h): device buffers and the public peftrun::cuda:: API, for the
//    gpu_*_parity_test executables (skipped without a GPU);
//  - EmuEnv (tests/support/emulated_env.h): host buffers and the same kernel bodies run by the
//    CPU block emulator, for the emulated_*_test executables of the CPU suite.
// Env provides Buffer<T> (with data()), upload(vector<T>), poisoned<T>(n) (all bytes 0xFF) and
// download(buffer), plus one method per op taking the public API's arguments minus the stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/half.h"
#include "tests/gpu/gpu_test_support.h"

namespace peftrun::gpu_testing {

// n floats stored as `dtype` (round to nearest even), as raw bytes.
inline std::vector<unsigned char> encode(const std::vector<float>& v, DType dtype) {
  std::vector<unsigned char> out(v.size() * dtype_size(dtype));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const std::uint16_t b = dtype == DType::kF16 ? float_to_half(v[i]) : float_to_bf16(v[i]);
      std::memcpy(out.data() + 2 * i, &b, 2);
    }
  }
  return out;
}

inline std::vector<float> decode(const std::vector<unsigned char>& bytes, DType dtype) {
  std::vector<float> out(bytes.size() / dtype_size(dtype));
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&out[i], bytes.data() + 4 * i, 4);
    } else {
      std::uint16_t b;
      std::memcpy(&b, bytes.data() + 2 * i, 2);
      out[i] = dtype == DType::kF16 ? half_to_float(b) : bf16_to_float(b);
    }
  }
  return out;
}

// The values the device will actually see after storing v as dtype.
inline std::vector<float> rounded(const std::vector<float>& v, DType dtype) {
  return decode(encode(v, dtype), dtype);
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// out - base element-wise: the increment an accumulating kernel added.
inline std::vector<double> increment(const std::vector<float>& out,
                                     const std::vector<float>& base) {
  std::vector<double> d(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    d[i] = static_cast<double>(out[i]) - static_cast<double>(base[i]);
  }
  return d;
}
inline std::vector<double> increment(const std::vector<double>& out,
                                     const std::vector<float>& base) {
  std::vector<double> d(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) d[i] = out[i] - static_cast<double>(base[i]);
  return d;
}

inline double tolerance(DType dtype) {
  return dtype == DType::kF32 ? kTolFp32 : dtype == DType::kF16 ? kTolFp16 : kTolBf16;
}

// EXPECT_LE(rel_error(out, ref), tol), naming `what`. With PEFTRUN_PARITY_REPORT set in the
// environment every comparison is also printed ("parity CASE DTYPE WHAT rel_error tol"), which
// is how the measured errors in bench/results/ are collected.
template <typename A, typename B>
void expect_close(const std::string& where, const char* what, const std::vector<A>& out,
                  const std::vector<B>& ref, double tol) {
  const double err = rel_error(out, ref);
  if (std::getenv("PEFTRUN_PARITY_REPORT")) {
    std::printf("parity %s %s rel_error %.3e tol %.1e\n", where.c_str(), what, err, tol);
  }
  EXPECT_LE(err, tol) << where << ": " << what;
}

inline constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// A seed per case name, so cases do not share inputs.
inline std::uint64_t seed_of(const std::string& name, std::uint64_t salt = 0) {
  std::uint64_t h = 1469598103934665603ull ^ salt;
  for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

}  // namespace peftrun::gpu_testing
