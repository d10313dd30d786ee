// Parity cases of the RMSNorm kernels against the CPU twin (kernels/rmsnorm_cpu.cpp), for
// tests/gpu/rmsnorm_parity_test.cpp (GPU) and tests/emulated_kernels_test.cpp (CPU emulator); see
// tests/gpu/parity_support.h. Reference in double on the rounded inputs and fp16 weight. Each case
// runs with weight offset 0 (weights around 1, LLaMA) and 1 (weights around 0, Gemma's 1 + w).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/half.h"
#include "kernels/rmsnorm.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct RmsNormCase {
  const char* name;
  int rows, dim;
};

template <class Env>
void check_rmsnorm(Env& env, const RmsNormCase& c, DType dt, float offset) {
  const std::string where =
      std::string(c.name) + " " + dtype_name(dt) + (offset != 0.0f ? " offset 1" : "");
  const std::uint64_t seed = seed_of(c.name);
  const std::size_t n = static_cast<std::size_t>(c.rows) * c.dim;
  const float eps = 1e-5f;
  const std::vector<float> x = rounded(random_floats(n, seed, 2.0f), dt);
  const std::vector<float> dy = rounded(random_floats(n, seed + 1), dt);
  std::vector<half_bits> w_half(static_cast<std::size_t>(c.dim));
  std::vector<double> w(w_half.size());
  const std::vector<float> w_raw = random_floats(w_half.size(), seed + 2, 0.5f);
  for (std::size_t i = 0; i < w.size(); ++i) {
    w_half[i] = float_to_half(offset != 0.0f ? w_raw[i] : 1.0f + w_raw[i]);
    w[i] = half_to_float(w_half[i]);
  }

  const std::vector<double> xd = to_double(x), dyd = to_double(dy);
  std::vector<double> y_ref(n), rstd_ref(static_cast<std::size_t>(c.rows)), dx_ref(n);
  cpu::rmsnorm_forward<double>(xd.data(), w.data(), offset, y_ref.data(), rstd_ref.data(), c.rows,
                               c.dim, eps);
  cpu::rmsnorm_backward<double>(dyd.data(), xd.data(), w.data(), offset, rstd_ref.data(),
                                dx_ref.data(), c.rows, c.dim);

  auto d_x = env.upload(encode(x, dt));
  auto d_w = env.upload(w_half);
  auto d_y = env.template poisoned<unsigned char>(n * dtype_size(dt));
  auto d_rstd = env.template poisoned<float>(static_cast<std::size_t>(c.rows));
  env.rmsnorm_forward(d_x.data(), d_w.data(), offset, d_y.data(), d_rstd.data(), c.rows, c.dim, eps,
                      dt);
  expect_close(where, "y", decode(env.download(d_y), dt), y_ref, tolerance(dt));
  expect_close(where, "rstd", env.download(d_rstd), rstd_ref, kTolFp32);

  auto d_dy = env.upload(encode(dy, dt));
  auto d_dx = env.template poisoned<unsigned char>(n * dtype_size(dt));
  env.rmsnorm_backward(d_dy.data(), d_x.data(), d_w.data(), offset, d_rstd.data(), d_dx.data(),
                       c.rows, c.dim, dt);
  const std::vector<float> dx = decode(env.download(d_dx), dt);
  expect_close(where, "dx", dx, dx_ref, tolerance(dt));
  // dx may alias dy: the same result in place.
  env.rmsnorm_backward(d_dy.data(), d_x.data(), d_w.data(), offset, d_rstd.data(), d_dy.data(),
                       c.rows, c.dim, dt);
  EXPECT_EQ(decode(env.download(d_dy), dt), dx) << where << ": in-place dx";
}

namespace rmsnorm_cases {
inline const RmsNormCase kOneRowDim8{"OneRowDim8", 1, 8};
inline const RmsNormCase kSevenRowsDim100{"SevenRowsDim100", 7, 100};
inline const RmsNormCase kTinyConfig{"TinyConfigDim128", 33, 128};
inline const RmsNormCase kDim1000{"Rows127Dim1000", 127, 1000};
inline const RmsNormCase kWideOdd{"WideOddDim4099", 3, 4099};
}  // namespace rmsnorm_cases

inline std::vector<RmsNormCase> all_rmsnorm_cases() {
  using namespace rmsnorm_cases;
  return {kOneRowDim8, kSevenRowsDim100, kTinyConfig, kDim1000, kWideOdd};
}

}  // namespace peftrun::gpu_testing
