// Parity cases of the optimizer-side kernels (kernels/adamw_blocks.h, kernels/nonfinite_blocks.h)
// against the CPU, for tests/gpu/adamw_parity_test.cpp (GPU) and
// tests/emulated_training_kernels_test.cpp (CPU emulator); see tests/gpu/parity_support.h:
// AdamW over the flat fp32 buffer bit for bit, the gradient-norm sum of squares, and the
// non-finite detector of fp16 loss scaling / --debug in every storage type.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/nonfinite.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

// Three steps (weight decay on and off, a gradient scale, tiny gradients) over n elements: the
// params and both moments equal the CPU's bits.
template <class Env>
void check_adamw_three_steps(Env& env, std::size_t n) {
  std::vector<float> p = random_floats(n, 1), m = random_floats(n, 2, 0.01f);
  std::vector<float> v = random_floats(n, 3, 1e-4f);
  for (float& x : v) x = std::fabs(x);
  auto dp = env.upload(p), dm = env.upload(m), dv = env.upload(v);
  for (long step = 1; step <= 3; ++step) {
    const std::vector<float> g = random_floats(n, 10 + step, step == 2 ? 1e-6f : 1.0f);
    auto dg = env.upload(g);
    AdamWHyper h;
    h.lr = 3e-3;
    h.weight_decay = step == 3 ? 0.0 : 0.01;
    h.step = step;
    h.grad_scale = step == 2 ? 0.25 : 1.0;  // clipping / loss-scale undo
    cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, h);
    env.adamw_step(dp.data(), dg.data(), dm.data(), dv.data(), n, h);
  }
  const std::vector<float> gp = env.download(dp), gm = env.download(dm), gv = env.download(dv);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < n; ++i) {
    differ += std::memcmp(&gp[i], &p[i], 4) != 0 || std::memcmp(&gm[i], &m[i], 4) != 0 ||
              std::memcmp(&gv[i], &v[i], 4) != 0;
  }
  EXPECT_EQ(differ, 0u) << "n=" << n << ": elements whose params or moments differ from the CPU";
}

// The sum of squares equals the CPU's double sum to 1e-12 and is deterministic.
template <class Env>
void check_sum_squares(Env& env, std::size_t n) {
  const std::vector<float> x = random_floats(n, 20 + n);
  auto dx = env.upload(x);
  auto result = env.template poisoned<double>(1);
  auto ws = env.template poisoned<unsigned char>(env.sum_squares_workspace_bytes(n));
  env.sum_squares(dx.data(), n, result.data(), ws.data());
  const double got = env.download(result)[0];
  const double want = cpu::sum_squares(x.data(), n);
  EXPECT_NEAR(got, want, 1e-12 * want) << "n=" << n;
  env.sum_squares(dx.data(), n, result.data(), ws.data());
  EXPECT_EQ(env.download(result)[0], got) << "n=" << n << ": not deterministic";
}

// Inf and NaN found in every storage type, with the CPU scan's count and first index (fp16
// also flags a value that only overflows fp16); a clean buffer reports nothing; scans
// accumulate into one report.
template <class Env>
void check_nonfinite_scan(Env& env, std::size_t n) {
  const float inf = std::numeric_limits<float>::infinity();
  for (const DType t : kAllDTypes) {
    const std::string where = "n=" + std::to_string(n) + " " + dtype_name(t);
    std::vector<float> x = random_floats(n, 30);
    auto clean = env.upload(encode(x, t));
    auto report = env.template poisoned<NonfiniteReport>(1);
    env.nonfinite_reset(report.data());
    env.nonfinite_scan(clean.data(), t, n, report.data());
    EXPECT_FALSE(env.download(report)[0].found()) << where;
    EXPECT_EQ(env.download(report)[0].first_index, ~std::uint64_t(0)) << where;

    x[n - 1] = inf;
    x[(n / 17) * 3] = std::nanf("");
    x[n / 2 + 1] = -inf;
    x[5] = 1e5f;  // overflows fp16 only
    const std::vector<float> stored = rounded(x, t);
    NonfiniteReport want;
    cpu::nonfinite_scan(stored.data(), DType::kF32, n, want);
    auto dirty = env.upload(encode(x, t));
    env.nonfinite_reset(report.data());
    env.nonfinite_scan(dirty.data(), t, n, report.data());
    const NonfiniteReport got = env.download(report)[0];
    EXPECT_EQ(got.count, want.count) << where;
    EXPECT_EQ(got.first_index, want.first_index) << where;
    EXPECT_EQ(got.count, t == DType::kF16 ? 4u : 3u) << where;

    env.nonfinite_scan(dirty.data(), t, n, report.data());
    EXPECT_EQ(env.download(report)[0].count, 2 * want.count) << where << ": scans accumulate";
  }
}

// Lengths: one element, one block's worth plus a tail, several grid passes' worth of blocks.
inline const std::size_t kOptimizerLengths[] = {1, 257, 100003};

}  // namespace peftrun::gpu_testing
