// Parity cases of the storage conversions and dropout (kernels/convert_blocks.h,
// kernels/dropout_blocks.h) against the host's bit-level definitions, for
// tests/gpu/convert_dropout_parity_test.cpp (GPU) and tests/emulated_training_kernels_test.cpp
// (CPU emulator); see tests/gpu/parity_support.h. Every conversion pair rounds like
// float_to_half / float_to_bf16 (special values included), the counter-based keep mask is
// bit-identical to cpu::dropout_keep_mask, and applying the mask (forward and to a gradient)
// gives the bits the fp32 formula gives after rounding.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/dropout.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

inline std::vector<float> values_with_specials(std::size_t n, std::uint64_t seed) {
  std::vector<float> v = random_floats(n, seed, 4.0f);
  const float specials[] = {std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::nanf(""),
                            65504.0f,
                            65520.0f,  // rounds to fp16 inf
                            1e-8f,     // fp16 subnormal range
                            -3e-5f,
                            3.0e38f,
                            1.17549435e-38f,
                            -0.0f};
  for (std::size_t i = 0; i < sizeof(specials) / sizeof(float) && i < n; ++i) {
    v[i * 7 % n] = specials[i];
  }
  return v;
}

inline bool same_value(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, 4) == 0;
}

inline float round_one(float x, DType t) {
  return rounded(std::vector<float>{x}, t)[0];
}

template <class Env>
void check_convert_every_pair(Env& env, std::size_t n) {
  const std::vector<float> v = values_with_specials(n, 1);
  for (const DType from : kAllDTypes) {
    const std::vector<float> src = rounded(v, from);
    auto d_src = env.upload(encode(src, from));
    for (const DType to : kAllDTypes) {
      auto d_dst = env.template poisoned<unsigned char>(n * dtype_size(to));
      env.convert(d_src.data(), from, d_dst.data(), to, n);
      const std::vector<float> got = decode(env.download(d_dst), to);
      const std::vector<float> want = rounded(src, to);
      std::size_t differ = 0;
      for (std::size_t i = 0; i < n; ++i) differ += !same_value(got[i], want[i]);
      EXPECT_EQ(differ, 0u) << "n=" << n << " " << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
}

template <class Env>
void check_cast_rows_scaled(Env& env, int rows, int cols) {
  const std::vector<float> src = random_floats(std::size_t(rows) * cols, 2);
  const std::vector<float> scale = random_floats(rows, 3);
  auto d_src = env.upload(src);
  auto d_scale = env.upload(scale);
  for (const DType to : kAllDTypes) {
    for (const bool scaled : {false, true}) {
      auto dst = env.template poisoned<unsigned char>(src.size() * dtype_size(to));
      env.cast_rows_scaled(d_src.data(), scaled ? d_scale.data() : nullptr, rows, cols, to,
                           dst.data());
      const std::vector<float> got = decode(env.download(dst), to);
      std::size_t differ = 0;
      for (std::size_t e = 0; e < src.size(); ++e) {
        const float want = round_one(scaled ? src[e] * scale[e / cols] : src[e], to);
        differ += !same_value(got[e], want);
      }
      EXPECT_EQ(differ, 0u) << rows << "x" << cols << " " << dtype_name(to) << " scaled=" << scaled;
    }
  }
}

template <class Env>
void check_keep_mask(Env& env, std::size_t n) {
  for (const float p : {0.05f, 0.5f}) {
    const std::uint64_t key = 0x5eedull * static_cast<std::uint64_t>(p * 100);
    std::vector<std::uint8_t> want(n);
    cpu::dropout_keep_mask(key, p, n, want.data());
    auto keep = env.template poisoned<std::uint8_t>(n);
    env.dropout_keep_mask(key, p, n, keep.data());
    EXPECT_EQ(env.download(keep), want) << "n=" << n << " p=" << p;
  }
}

template <class Env>
void check_apply_and_mask(Env& env, std::size_t n) {
  const float keep_scale = 1.0f / 0.7f;
  std::vector<std::uint8_t> keep(n);
  cpu::dropout_keep_mask(77, 0.3f, n, keep.data());
  auto d_keep = env.upload(keep);
  for (const DType t : kAllDTypes) {
    const std::vector<float> x = rounded(random_floats(n, 4), t);
    auto dx = env.upload(encode(x, t));
    for (const bool with_rest : {true, false}) {
      auto x_drop = env.template poisoned<unsigned char>(n * dtype_size(t));
      auto x_rest = env.template poisoned<unsigned char>(n * dtype_size(t));
      env.apply_dropout(dx.data(), d_keep.data(), keep_scale, n, t, x_drop.data(),
                        with_rest ? x_rest.data() : nullptr);
      const std::vector<float> got_drop = decode(env.download(x_drop), t);
      const std::vector<float> got_rest = decode(env.download(x_rest), t);
      std::size_t differ = 0, rest_written = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const float d = keep[i] ? x[i] * keep_scale : 0.0f;  // cpu::lora_linear's x_drop
        differ += !same_value(got_drop[i], round_one(d, t));
        if (with_rest) differ += !same_value(got_rest[i], round_one(x[i] - d, t));
        rest_written += !std::isnan(got_rest[i]);
      }
      EXPECT_EQ(differ, 0u) << dtype_name(t) << " with_rest=" << with_rest;
      if (!with_rest) {
        EXPECT_EQ(rest_written, 0u) << "x_rest written although not asked for";
      }
    }

    env.mask_by_keep(dx.data(), d_keep.data(), keep_scale, n, t);
    const std::vector<float> masked = decode(env.download(dx), t);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < n; ++i) {
      differ += !same_value(masked[i], round_one(keep[i] ? x[i] * keep_scale : 0.0f, t));
    }
    EXPECT_EQ(differ, 0u) << "mask_by_keep " << dtype_name(t);
  }
}

}  // namespace peftrun::gpu_testing
