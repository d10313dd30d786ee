// Parity cases of the two small kernels around cuda::gemm (kernels/gemm_blocks.h): the K = 0
// product D = beta C + bias and scale_columns (DoRA's alpha-vector fallback), for
// tests/gpu/gemm_parity_test.cpp (GPU, K = 0 through cuda::gemm) and
// tests/emulated_adapter_kernels_test.cpp (CPU emulator); see tests/gpu/parity_support.h.
// Every matrix has a padded row stride whose padding holds 7 and must still hold it after.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

inline constexpr float kPadding = 7.0f;

struct StridedCase {
  const char* name;
  int rows, cols, pad;  // row stride ldd = cols + pad
};
inline const StridedCase kStridedCases[] = {
    {"1x1", 1, 1, 0}, {"7x33_pad3", 7, 33, 3}, {"31x17", 31, 17, 0}, {"130x257_pad5", 130, 257, 5}};

// The [rows, cols] block of a row-major matrix with stride ldd, in double.
inline std::vector<double> strided_block(const std::vector<float>& m, int rows, int cols, int ldd) {
  std::vector<double> b;
  b.reserve(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols));
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) b.push_back(m[static_cast<std::size_t>(i) * ldd + j]);
  }
  return b;
}

// What a kernel computing ref in fp32 stores in t: ref rounded to fp32, then to t.
inline std::vector<double> stored_as(const std::vector<double>& ref, DType t) {
  return to_double(rounded(std::vector<float>(ref.begin(), ref.end()), t));
}

// Padding entries of m that no longer hold kPadding.
inline std::size_t padding_changed(const std::vector<float>& m, int rows, int cols, int ldd) {
  std::size_t changed = 0;
  for (int i = 0; i < rows; ++i) {
    for (int j = cols; j < ldd; ++j)
      changed += m[static_cast<std::size_t>(i) * ldd + j] != kPadding;
  }
  return changed;
}

// rows x ldd values rounded to t (never zero) with kPadding in the padding columns; nan_block:
// NaN instead of random values in the [rows, cols] block.
inline std::vector<float> padded_matrix(const StridedCase& c, DType t, std::uint64_t seed,
                                        bool nan_block = false) {
  const int ldd = c.cols + c.pad;
  std::vector<float> m =
      rounded(random_floats(static_cast<std::size_t>(c.rows) * ldd, seed, 2.0f), t);
  for (int i = 0; i < c.rows; ++i) {
    for (int j = 0; j < ldd; ++j) {
      float& x = m[static_cast<std::size_t>(i) * ldd + j];
      if (j >= c.cols) {
        x = kPadding;
      } else if (nan_block) {
        x = std::nanf("");
      }
    }
  }
  return m;
}

// D[i, j] = Z[i, j] * scale[j], Z fp32: one fp32 product rounded to the storage type. One
// column's scale is 1 + 1e-3, below half a bf16 ulp: it must still move D as the exact product
// does (it would not if the kernel scaled an already rounded value).
template <class Env>
void check_scale_columns(Env& env, const StridedCase& c, DType t) {
  const std::string where = std::string(c.name) + " " + dtype_name(t);
  const int ldd = c.cols + c.pad;
  const std::vector<float> D0 = padded_matrix(c, t, seed_of(c.name, 1));
  const std::vector<float> Z = padded_matrix(c, DType::kF32, seed_of(c.name, 3));
  std::vector<float> scale =
      random_floats(static_cast<std::size_t>(c.cols), seed_of(c.name, 2), 1.5f);
  scale[0] = 1.001f;
  std::vector<double> ref = strided_block(Z, c.rows, c.cols, ldd);
  for (std::size_t e = 0; e < ref.size(); ++e)
    ref[e] *= scale[e % static_cast<std::size_t>(c.cols)];
  auto dD = env.upload(encode(D0, t));
  auto dZ = env.upload(Z);
  auto d_scale = env.upload(scale);
  env.scale_columns(dZ.data(), dD.data(), t, c.rows, c.cols, ldd, d_scale.data());
  const std::vector<float> D = decode(env.download(dD), t);
  EXPECT_EQ(padding_changed(D, c.rows, c.cols, ldd), 0u) << where << ": padding overwritten";
  expect_close(where, "D * scale", strided_block(D, c.rows, c.cols, ldd), stored_as(ref, t),
               tolerance(t));
}

struct EmptyProductMode {
  const char* name;
  float beta;
  bool bias, separate_c;
};
inline const EmptyProductMode kEmptyProductModes[] = {
    {"beta0_over_nan", 0.0f, false, false},           // D = 0: the NaN output is never read
    {"beta0_bias_over_nan", 0.0f, true, false},       // D = bias
    {"beta0_bias_nan_c", 0.0f, true, true},           // a separate C full of NaN is never read
    {"beta1_in_place", 1.0f, false, false},           // D unchanged (rounded through fp32)
    {"beta1_bias_in_place", 1.0f, true, false},       // D += bias
    {"beta_half_bias_separate_c", 0.5f, true, true},  // D = 0.5 C + bias
    {"beta_minus_0.3_separate_c", -0.3f, false, true}};

// K = 0: D = beta C + bias (C = D when not separate), against the formula in double.
template <class Env>
void check_empty_product(Env& env, const StridedCase& c, const EmptyProductMode& mode, DType t) {
  const std::string where = std::string(c.name) + " " + mode.name + " " + dtype_name(t);
  const int ldd = c.cols + c.pad;
  const std::uint64_t seed = seed_of(where);
  const bool d_is_input = mode.beta != 0.0f && !mode.separate_c;
  const std::vector<float> C =
      padded_matrix(c, t, seed, /*nan_block=*/mode.beta == 0.0f);  // beta C's input
  const std::vector<float> D0 = d_is_input ? C : padded_matrix(c, t, seed + 1, true);
  const std::vector<float> bias =
      rounded(random_floats(static_cast<std::size_t>(c.cols), seed + 2), t);
  std::vector<double> ref = strided_block(C, c.rows, c.cols, ldd);
  for (std::size_t e = 0; e < ref.size(); ++e) {
    ref[e] = mode.beta == 0.0f ? 0.0 : static_cast<double>(mode.beta) * ref[e];
    if (mode.bias) ref[e] += bias[e % static_cast<std::size_t>(c.cols)];
  }
  auto dD = env.upload(encode(D0, t));
  auto dC = env.upload(encode(C, t));
  auto d_bias = env.upload(encode(bias, t));
  env.gemm_empty_product(dD.data(), mode.separate_c ? dC.data() : nullptr, t, c.rows, c.cols, ldd,
                         mode.beta, mode.bias ? d_bias.data() : nullptr);
  const std::vector<float> D = decode(env.download(dD), t);
  EXPECT_EQ(padding_changed(D, c.rows, c.cols, ldd), 0u) << where << ": padding overwritten";
  expect_close(where, "beta C + bias", strided_block(D, c.rows, c.cols, ldd), stored_as(ref, t),
               tolerance(t));
}

}  // namespace peftrun::gpu_testing
