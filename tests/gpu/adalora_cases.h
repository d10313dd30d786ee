// Parity cases of AdaLoRA's kernels (kernels/adalora_blocks.h) against the CPU
// (kernels/adalora_cpu.cpp and the formulas of kernels/adalora.h evaluated on the host), for
// tests/gpu/adalora_parity_test.cpp (GPU) and tests/emulated_adalora_test.cpp (CPU emulator);
// see tests/gpu/parity_support.h: the importance EMAs bit for bit, the triplet scores of a
// module at unaligned flat-buffer offsets (rel 1e-6, deterministic) and the E chain rule of
// the linear layer's backward (dA, dE increments).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "kernels/adalora.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

inline std::vector<float> positive_floats(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::vector<float> v = random_floats(n, seed, scale);
  for (float& x : v) x = std::fabs(x);
  return v;
}

// y - y0 in double, element by element (the increment an accumulating kernel added).
template <typename A, typename B>
std::vector<double> increment_of(const std::vector<A>& y, const std::vector<B>& y0) {
  std::vector<double> d(y.size());
  for (std::size_t i = 0; i < y.size() && i < y0.size(); ++i) {
    d[i] = static_cast<double>(y[i]) - static_cast<double>(y0[i]);
  }
  return d;
}

// Three importance updates (grad_scale 1, 0.37, 1) over n flat elements: both EMAs equal the
// CPU's bits.
template <class Env>
void check_adalora_importance(Env& env, std::size_t n) {
  const std::string where = "importance n=" + std::to_string(n);
  const std::vector<float> p = random_floats(n, seed_of(where, 1));
  const std::vector<float> g = random_floats(n, seed_of(where, 2), 1e-3f);
  std::vector<float> ipt = positive_floats(n, seed_of(where, 3));
  std::vector<float> unc = positive_floats(n, seed_of(where, 4));
  auto dp = env.upload(p), dg = env.upload(g), dipt = env.upload(ipt), dunc = env.upload(unc);
  for (const double grad_scale : {1.0, 0.37, 1.0}) {
    cpu::adalora_update_importance(p.data(), g.data(), ipt.data(), unc.data(), n, 0.85, 0.95,
                                   grad_scale);
    env.adalora_update_importance(dp.data(), dg.data(), dipt.data(), dunc.data(), n, 0.85, 0.95,
                                  grad_scale);
  }
  const std::vector<float> gi = env.download(dipt), gu = env.download(dunc);
  ASSERT_EQ(gi.size(), n);
  EXPECT_EQ(std::memcmp(gi.data(), ipt.data(), n * sizeof(float)), 0) << where << ": ipt_ema";
  EXPECT_EQ(std::memcmp(gu.data(), unc.data(), n * sizeof(float)), 0) << where << ": unc_ema";
}

// The triplet scores of one module [r, in] / [out, r] / [r] placed at odd offsets of a flat
// buffer: within 1e-6 of the CPU's (the double sums are added in another order; after rounding
// the means to fp32 the scores agree to the last bit or within an ulp), and the same bits when
// run again.
template <class Env>
void check_adalora_triplet_scores(Env& env, int r, int in, int out) {
  const std::string where = "triplet scores r=" + std::to_string(r) + " in=" + std::to_string(in) +
                            " out=" + std::to_string(out);
  AdaLoraModuleView m;
  m.a = 17;  // odd offsets: nothing is aligned
  m.b = m.a + std::size_t(r) * in + 5;
  m.e = m.b + std::size_t(out) * r + 3;
  m.r = r;
  m.in = in;
  m.out = out;
  const std::size_t total = m.e + r + 11;
  const std::vector<float> ipt = positive_floats(total, seed_of(where, 5));
  const std::vector<float> unc = positive_floats(total, seed_of(where, 6));
  std::vector<float> ref(r);
  cpu::adalora_triplet_scores(ipt.data(), unc.data(), m, ref.data());
  auto dipt = env.upload(ipt), dunc = env.upload(unc);
  auto scores = env.template poisoned<float>(r);
  env.adalora_triplet_scores(dipt.data(), dunc.data(), total, m, scores.data());
  const std::vector<float> got = env.download(scores);
  EXPECT_LT(rel_error(got, ref), 1e-6) << where;
  int equal = 0;
  for (int k = 0; k < r; ++k) equal += got[k] == ref[k];
  std::cout << "[ triplet scores ] " << where << ": " << equal << " of " << r << " bit-identical"
            << std::endl;
  auto again = env.template poisoned<float>(r);
  env.adalora_triplet_scores(dipt.data(), dunc.data(), total, m, again.data());
  EXPECT_EQ(env.download(again), got) << where << ": not deterministic";
}

// The chain rule through A~ = E * A (adalora.h) on random dA~, A, E, with dA and dE starting
// from random values: the increments against the formulas evaluated in double on the host,
//   dA[k, :] += E[k] dA~[k, :],  dE[k] += sum_j dA~[k, j] A[k, j].
template <class Env>
void check_adalora_e_chain(Env& env, int r, int in) {
  const std::string where = "e_chain r=" + std::to_string(r) + " in=" + std::to_string(in);
  const std::size_t n = std::size_t(r) * in;
  const std::vector<float> dAs = random_floats(n, seed_of(where, 1));
  const std::vector<float> A = random_floats(n, seed_of(where, 2));
  const std::vector<float> E = random_floats(r, seed_of(where, 3));
  const std::vector<float> dA0 = random_floats(n, seed_of(where, 4));
  const std::vector<float> dE0 = random_floats(r, seed_of(where, 5));
  std::vector<double> dA_inc(n), dE_inc(r);
  for (int k = 0; k < r; ++k) {
    double acc = 0;
    for (int j = 0; j < in; ++j) {
      const std::size_t o = std::size_t(k) * in + j;
      dA_inc[o] = double(E[k]) * double(dAs[o]);
      acc += double(dAs[o]) * double(A[o]);
    }
    dE_inc[k] = acc;
  }
  auto d_dAs = env.upload(dAs), d_A = env.upload(A), d_E = env.upload(E);
  auto d_dA = env.upload(dA0), d_dE = env.upload(dE0);
  env.adalora_e_chain(d_dAs.data(), d_A.data(), d_E.data(), r, in, d_dA.data(), d_dE.data());
  expect_close(where, "dA increment", increment_of(env.download(d_dA), dA0), dA_inc, kTolFp32);
  expect_close(where, "dE increment", increment_of(env.download(d_dE), dE0), dE_inc, kTolFp32);
  // The inputs are only read.
  EXPECT_EQ(env.download(d_dAs), dAs) << where;
  EXPECT_EQ(env.download(d_A), A) << where;
  EXPECT_EQ(env.download(d_E), E) << where;
}

// (r, in) of the E chain: one element, one row shorter than the block, rows spanning several
// block passes with a tail, AdaLoRA's init_r on a tiny projection.
struct EChainShape {
  int r, in;
};
inline const EChainShape kEChainShapes[] = {{1, 1}, {3, 100}, {12, 128}, {5, 1000}, {16, 4099}};

}  // namespace peftrun::gpu_testing
