// Parity cases of DoRA's non-matmul kernels (kernels/dora_blocks.h) against the CPU twin
// (kernels/dora_cpu.cpp) and the formulas of kernels/dora.h, for tests/gpu/dora_parity_test.cpp
// (GPU) and tests/emulated_adapter_kernels_test.cpp (CPU emulator); see tests/gpu/parity_support.h.
// The matmul products the kernels consume (P = W A^T, G = A A^T, v = g * (x~ W^T), xa, P = dy^T xa)
// are computed here on the host in double from the stored inputs, so each kernel is checked on
// its own: the row norms in every weight type, the rank-r norm identity against
// cpu::dora_weight_norm, the factors, the dy * v column sums with row splits (columns not a
// multiple of the 32-column tile, rows not a multiple of the split, empty trailing splits), and
// dB / dm increments, both against dora.h's row formula and, chained after the column pass,
// against dora_cpu.cpp's dm = sum_i dy z / n.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/dora.h"
#include "kernels/dora_blocks.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

// The row norms are double sums rounded once to fp32.
inline constexpr double kRowSqTol = 1e-6;

inline std::size_t dsz(int a, int b) {
  return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

// C = X Y^T in double: X [rows, k], Y [cols, k] row-major.
inline std::vector<double> times_transposed(const std::vector<float>& X,
                                            const std::vector<float>& Y, int rows, int cols,
                                            int k) {
  std::vector<double> C(dsz(rows, cols));
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) {
      double s = 0.0;
      for (int l = 0; l < k; ++l) {
        s += static_cast<double>(X[dsz(i, k) + l]) * static_cast<double>(Y[dsz(j, k) + l]);
      }
      C[dsz(i, cols) + j] = s;
    }
  }
  return C;
}

inline std::vector<float> to_floats(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// Norms n > 0.5 and magnitudes m = n * U(0.5, 1.5), so g = m / n is not 1.
inline void norms_and_magnitudes(int out, std::uint64_t seed, std::vector<float>& nrm,
                                 std::vector<float>& m) {
  nrm = random_floats(static_cast<std::size_t>(out), seed);
  const std::vector<float> wiggle = random_floats(static_cast<std::size_t>(out), seed + 1, 0.5f);
  m.resize(nrm.size());
  for (std::size_t j = 0; j < nrm.size(); ++j) {
    nrm[j] = std::fabs(nrm[j]) + 0.5f;
    m[j] = nrm[j] * (1.0f + wiggle[j]);
  }
}

struct RowSqCase {
  const char* name;
  int out, in;
};
// in = 1; a row shorter than the block; rows longer than the block with a tail (1000 = 3 * 256
// + 232) and more rows than one norm_rows block.
inline const RowSqCase kRowSqCases[] = {
    {"3x1", 3, 1}, {"65x127", 65, 127}, {"130x1000", 130, 1000}};

// w_sq = ||W_j||^2 for W stored as w_type, against cpu::row_sq_norms in double on the stored W.
template <class Env>
void check_dora_row_sq_norms(Env& env, const RowSqCase& c, DType w_type) {
  const std::string where = std::string(c.name) + " " + dtype_name(w_type);
  const std::vector<float> W =
      rounded(random_floats(dsz(c.out, c.in), seed_of(c.name, 1), 0.3f), w_type);
  const std::vector<double> Wd = to_double(W);
  std::vector<double> ref(static_cast<std::size_t>(c.out));
  cpu::row_sq_norms(Wd.data(), c.out, c.in, ref.data());
  auto dW = env.upload(encode(W, w_type));
  auto w_sq = env.template poisoned<float>(static_cast<std::size_t>(c.out));
  env.row_sq_norms(dW.data(), w_type, c.out, c.in, w_sq.data());
  expect_close(where, "w_sq", env.download(w_sq), ref, kRowSqTol);
}

struct NormCase {
  const char* name;
  int out, in, r;
};
inline const NormCase kNormCases[] = {{"1x5_r1", 1, 5, 1},
                                      {"7x33_r3", 7, 33, 3},
                                      {"65x127_r8", 65, 127, 8},
                                      {"130x64_r16", 130, 64, 16}};

// The rank-r identity: w_sq from the row-norm kernel on W stored as w_type, P = W A^T and
// G = A A^T computed on the host and stored fp32, then the norm-rows kernel, against
// cpu::dora_weight_norm in double on the same W, A, B.
template <class Env>
void check_dora_norm_rows(Env& env, const NormCase& c, DType w_type) {
  const std::string where = std::string(c.name) + " " + dtype_name(w_type);
  const std::uint64_t seed = seed_of(c.name, 2);
  const float s = 1.5f;
  const std::vector<float> W = rounded(random_floats(dsz(c.out, c.in), seed, 0.3f), w_type);
  const std::vector<float> A = random_floats(dsz(c.r, c.in), seed + 1, 0.3f);
  const std::vector<float> B = random_floats(dsz(c.out, c.r), seed + 2, 0.5f);
  const std::vector<double> Wd = to_double(W), Ad = to_double(A), Bd = to_double(B);
  std::vector<double> w_sq_ref(static_cast<std::size_t>(c.out)), ref(w_sq_ref.size());
  std::vector<double> work(cpu::dora_norm_workspace(c.out, c.r));
  cpu::row_sq_norms(Wd.data(), c.out, c.in, w_sq_ref.data());
  cpu::dora_weight_norm(Wd.data(), w_sq_ref.data(), Ad.data(), Bd.data(), c.out, c.in, c.r,
                        static_cast<double>(s), ref.data(), work.data());

  auto dW = env.upload(encode(W, w_type));
  auto dB = env.upload(B);
  auto dP = env.upload(to_floats(times_transposed(W, A, c.out, c.r, c.in)));
  auto dG = env.upload(to_floats(times_transposed(A, A, c.r, c.r, c.in)));
  auto w_sq = env.template poisoned<float>(static_cast<std::size_t>(c.out));
  auto norm = env.template poisoned<float>(static_cast<std::size_t>(c.out));
  env.row_sq_norms(dW.data(), w_type, c.out, c.in, w_sq.data());
  env.dora_norm_rows(w_sq.data(), dB.data(), dP.data(), dG.data(), c.out, c.r, s, norm.data());
  expect_close(where, "norm", env.download(norm), ref, kTolFp32);
}

// g = m / n, s g and g - 1 against the double formulas; out = 1 and more than one block.
template <class Env>
void check_dora_factors(Env& env, int out) {
  const std::string where = "out=" + std::to_string(out);
  const float s = 0.75f;
  std::vector<float> nrm, m;
  norms_and_magnitudes(out, 40 + static_cast<std::uint64_t>(out), nrm, m);
  std::vector<double> g_ref(m.size()), sg_ref(m.size()), gm1_ref(m.size());
  for (std::size_t j = 0; j < m.size(); ++j) {
    g_ref[j] = static_cast<double>(m[j]) / static_cast<double>(nrm[j]);
    sg_ref[j] = static_cast<double>(s) * g_ref[j];
    gm1_ref[j] = g_ref[j] - 1.0;
  }
  auto dm = env.upload(m), dn = env.upload(nrm);
  auto g = env.template poisoned<float>(m.size()), sg = env.template poisoned<float>(m.size()),
       gm1 = env.template poisoned<float>(m.size());
  env.dora_factors(dm.data(), dn.data(), s, out, g.data(), sg.data(), gm1.data());
  expect_close(where, "g", env.download(g), g_ref, kTolFp32);
  expect_close(where, "s g", env.download(sg), sg_ref, kTolFp32);
  expect_close(where, "g - 1", env.download(gm1), gm1_ref, kTolFp32);
}

struct ColumnsCase {
  const char* name;
  int n, out, splits;
};
inline const ColumnsCase kColumnsCases[] = {
    {"n1_out1_split1", 1, 1, 1},
    {"n37_out33_split1", 37, 33, 1},
    {"n37_out33_split3", 37, 33, 3},  // 13 rows per split, the last 11
    {"n10_out65_split8", 10, 65, 8},  // 2 rows per split: splits 5..7 empty
    {"n200_out7_split64", 200, 7, 64},
    // What dora_linear_backward uses: 8 splits of 126 rows (the last 119), 100 = 3 * 32 + 4
    // columns; 9001 rows clamp to 64 splits.
    {"n1001_out100_production", 1001, 100, blocks::dora_column_splits(1001)},
    {"n9001_out40_production", 9001, 40, blocks::dora_column_splits(9001)},
};

// partial[split, j] = sum over the split's rows of dy v in double; dyg = dy * fac rounded to act.
template <class Env>
void check_dora_dy_v_columns(Env& env, const ColumnsCase& c, DType act) {
  const std::string where = std::string(c.name) + " " + dtype_name(act);
  const std::uint64_t seed = seed_of(c.name, 3);
  const std::size_t elems = dsz(c.n, c.out);
  const std::vector<float> dy = rounded(random_floats(elems, seed), act);
  const std::vector<float> v = rounded(random_floats(elems, seed + 1, 2.0f), act);
  const std::vector<float> fac = random_floats(static_cast<std::size_t>(c.out), seed + 2, 1.5f);
  const int rows_per_split = (c.n + c.splits - 1) / c.splits;
  std::vector<double> partial_ref(dsz(c.splits, c.out), 0.0);
  std::vector<float> dyg_ref(elems);
  for (int i = 0; i < c.n; ++i) {
    const int split = i / rows_per_split;
    for (int j = 0; j < c.out; ++j) {
      const std::size_t at = dsz(i, c.out) + static_cast<std::size_t>(j);
      partial_ref[dsz(split, c.out) + static_cast<std::size_t>(j)] +=
          static_cast<double>(dy[at]) * static_cast<double>(v[at]);
      dyg_ref[at] = dy[at] * fac[static_cast<std::size_t>(j)];  // exact product, rounded once
    }
  }
  dyg_ref = rounded(dyg_ref, act);

  auto d_dy = env.upload(encode(dy, act));
  auto d_v = env.upload(encode(v, act));
  auto d_fac = env.upload(fac);
  auto partial = env.template poisoned<float>(partial_ref.size());
  auto dyg = env.template poisoned<unsigned char>(elems * dtype_size(act));
  env.dora_dy_v_columns(d_dy.data(), d_v.data(), d_fac.data(), act, c.n, c.out, c.splits,
                        partial.data(), dyg.data());
  expect_close(where, "split partials of dy * v", env.download(partial), partial_ref, kTolFp32);
  expect_close(where, "dyg", decode(env.download(dyg), act), to_double(dyg_ref), tolerance(act));
}

struct GradRowsCase {
  const char* name;
  int out, r, splits;
};
inline const GradRowsCase kGradRowsCases[] = {{"out1_r1_split1", 1, 1, 1},
                                              {"out130_r8_split3", 130, 8, 3},
                                              {"out65_r16_split64", 65, 16, 64}};

// dB += s g P and dm += (sum of the split partials) / m + (s / n) <B, P> (dora.h), increments
// against the formula in double.
template <class Env>
void check_dora_grad_rows(Env& env, const GradRowsCase& c) {
  const std::string where = c.name;
  const std::uint64_t seed = seed_of(c.name, 4);
  const float s = 1.5f;
  std::vector<float> nrm, m;
  norms_and_magnitudes(c.out, seed, nrm, m);
  std::vector<float> g(m.size());
  for (std::size_t j = 0; j < m.size(); ++j) g[j] = m[j] / nrm[j];
  const std::vector<float> partial = random_floats(dsz(c.splits, c.out), seed + 2);
  const std::vector<float> B = random_floats(dsz(c.out, c.r), seed + 3, 0.5f);
  const std::vector<float> P = random_floats(dsz(c.out, c.r), seed + 4, 2.0f);
  const std::vector<float> dB0 = random_floats(B.size(), seed + 5);
  const std::vector<float> dm0 = random_floats(m.size(), seed + 6);
  std::vector<double> dB_inc(B.size()), dm_inc(m.size());
  for (int j = 0; j < c.out; ++j) {
    double colsum = 0.0, bp = 0.0;
    for (int t = 0; t < c.splits; ++t)
      colsum += partial[dsz(t, c.out) + static_cast<std::size_t>(j)];
    for (int k = 0; k < c.r; ++k) {
      const std::size_t at = dsz(j, c.r) + static_cast<std::size_t>(k);
      bp += static_cast<double>(B[at]) * static_cast<double>(P[at]);
      dB_inc[at] = static_cast<double>(s) * g[static_cast<std::size_t>(j)] * P[at];
    }
    const std::size_t jj = static_cast<std::size_t>(j);
    dm_inc[jj] = colsum / m[jj] + static_cast<double>(s) / nrm[jj] * bp;
  }

  auto d_g = env.upload(g), d_m = env.upload(m), d_n = env.upload(nrm);
  auto d_partial = env.upload(partial), d_B = env.upload(B), d_P = env.upload(P);
  auto dB = env.upload(dB0), dm = env.upload(dm0);
  env.dora_grad_rows(d_g.data(), d_m.data(), d_n.data(), s, d_partial.data(), c.splits, d_B.data(),
                     d_P.data(), c.out, c.r, dB.data(), dm.data());
  expect_close(where, "dB increment", increment(env.download(dB), dB0), dB_inc, kTolFp32);
  expect_close(where, "dm increment", increment(env.download(dm), dm0), dm_inc, kTolFp32);
}

struct DoraBackwardCase {
  const char* name;
  int n, in, out, r;
};
inline const DoraBackwardCase kDoraBackwardCases[] = {{"n37_in20_out33_r4", 37, 20, 33, 4},
                                                      {"n300_in16_out70_r8", 300, 16, 70, 8}};

// dm through the kernels of dora_linear_backward: factors, the column pass (with the production
// split count) and the row gradients, fed v = g * (x~ W^T) and xa = x~ A^T stored in act and
// P = dy^T xa, as the matmuls would. dora_cpu.cpp's dm increment is sum_i dy[i, j] z[i, j] / n_j
// with z = x~ W^T + s xa B^T; here z = v / g + s xa B^T on the stored v, so the check is the
// identity of dora.h through the kernels. dB += s (dy g)^T xa likewise. Both dyg factors: g (no
// dropout) and g - 1 (dropout).
template <class Env>
void check_dora_backward_rows(Env& env, const DoraBackwardCase& c, DType act) {
  const std::uint64_t seed = seed_of(c.name, 5);
  const float s = 1.5f;
  const std::vector<float> x = rounded(random_floats(dsz(c.n, c.in), seed), act);
  const std::vector<float> W = rounded(random_floats(dsz(c.out, c.in), seed + 1, 0.3f), act);
  const std::vector<float> A = rounded(random_floats(dsz(c.r, c.in), seed + 2, 0.3f), act);
  const std::vector<float> B = random_floats(dsz(c.out, c.r), seed + 3, 0.5f);
  const std::vector<float> dy = rounded(random_floats(dsz(c.n, c.out), seed + 4), act);
  std::vector<float> nrm, m;
  norms_and_magnitudes(c.out, seed + 5, nrm, m);
  const std::size_t out = static_cast<std::size_t>(c.out);

  auto d_m = env.upload(m), d_n = env.upload(nrm);
  auto g = env.template poisoned<float>(out), sg = env.template poisoned<float>(out),
       gm1 = env.template poisoned<float>(out);
  env.dora_factors(d_m.data(), d_n.data(), s, c.out, g.data(), sg.data(), gm1.data());
  const std::vector<float> g_h = env.download(g), gm1_h = env.download(gm1);

  // The matmul outputs, stored as the device would: v and xa in act, P in fp32.
  const std::vector<double> xw = times_transposed(x, W, c.n, c.out, c.in);
  std::vector<float> v(xw.size());
  for (std::size_t e = 0; e < v.size(); ++e) {
    v[e] = static_cast<float>(g_h[e % out] * xw[e]);
  }
  v = rounded(v, act);
  const std::vector<float> xa = rounded(to_floats(times_transposed(x, A, c.n, c.r, c.in)), act);
  std::vector<double> P(dsz(c.out, c.r), 0.0);
  for (int i = 0; i < c.n; ++i) {
    for (int j = 0; j < c.out; ++j) {
      for (int k = 0; k < c.r; ++k) {
        P[dsz(j, c.r) + static_cast<std::size_t>(k)] +=
            static_cast<double>(dy[dsz(i, c.out) + static_cast<std::size_t>(j)]) *
            xa[dsz(i, c.r) + static_cast<std::size_t>(k)];
      }
    }
  }

  // dora_cpu.cpp's increments on z = v / g + s xa B^T.
  const std::vector<double> xab = times_transposed(xa, B, c.n, c.out, c.r);
  std::vector<double> dm_inc(out, 0.0), dB_inc(dsz(c.out, c.r), 0.0);
  for (int i = 0; i < c.n; ++i) {
    for (int j = 0; j < c.out; ++j) {
      const std::size_t at = dsz(i, c.out) + static_cast<std::size_t>(j);
      const std::size_t jj = static_cast<std::size_t>(j);
      const double z = v[at] / static_cast<double>(g_h[jj]) + static_cast<double>(s) * xab[at];
      dm_inc[jj] += static_cast<double>(dy[at]) * z / nrm[jj];
      for (int k = 0; k < c.r; ++k) {
        dB_inc[dsz(j, c.r) + static_cast<std::size_t>(k)] +=
            static_cast<double>(s) * dy[at] * g_h[jj] *
            xa[dsz(i, c.r) + static_cast<std::size_t>(k)];
      }
    }
  }

  const int splits = blocks::dora_column_splits(c.n);
  auto d_dy = env.upload(encode(dy, act));
  auto d_v = env.upload(encode(v, act));
  auto d_B = env.upload(B);
  auto d_P = env.upload(to_floats(P));
  for (const bool dropout : {false, true}) {
    const std::string where =
        std::string(c.name) + " " + dtype_name(act) + (dropout ? " dropout (dy (g - 1))" : " dy g");
    const std::vector<float>& fac = dropout ? gm1_h : g_h;
    std::vector<float> dyg_ref(dy.size());
    for (std::size_t e = 0; e < dy.size(); ++e) dyg_ref[e] = dy[e] * fac[e % out];
    const std::vector<float> dB0 = random_floats(B.size(), seed + 6);
    const std::vector<float> dm0 = random_floats(out, seed + 7);
    auto dB = env.upload(dB0), dm = env.upload(dm0);
    auto partial = env.template poisoned<float>(dsz(splits, c.out));
    auto dyg = env.template poisoned<unsigned char>(dy.size() * dtype_size(act));
    env.dora_dy_v_columns(d_dy.data(), d_v.data(), dropout ? gm1.data() : g.data(), act, c.n, c.out,
                          splits, partial.data(), dyg.data());
    env.dora_grad_rows(g.data(), d_m.data(), d_n.data(), s, partial.data(), splits, d_B.data(),
                       d_P.data(), c.out, c.r, dB.data(), dm.data());
    expect_close(where, "dyg", decode(env.download(dyg), act), to_double(rounded(dyg_ref, act)),
                 tolerance(act));
    // Every input is exact in its storage type, so only fp32 arithmetic separates the two.
    expect_close(where, "dm increment", increment(env.download(dm), dm0), dm_inc, kTolFp32);
    expect_close(where, "dB increment", increment(env.download(dB), dB0), dB_inc, kTolFp32);
  }
}

}  // namespace peftrun::gpu_testing
