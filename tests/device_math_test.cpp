// The math the CUDA kernels run, checked on the CPU (no GPU needed, never skipped):
// - DoRA's GPU algorithm (dora.h's CUDA section: v = g * (x~ W^T) saved instead of z, the
//   dropout form rearranged as (x - x~) W^T + v, dm from colsum(dy * v) and P = dy^T xa, dxa
//   through diag(g) B) emulated step by step with cpu::gemm in double, including the very
//   PEFTRUN_HD row functions of dora_math.h, must equal the CPU twin to rounding;
// - the shared dropout mask, the non-finite scan and the loss-scale rule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dora.h"
#include "kernels/dora_math.h"
#include "kernels/dropout.h"
#include "kernels/gemm.h"
#include "kernels/half.h"
#include "kernels/loss_scale.h"
#include "kernels/nonfinite.h"
#include "runtime/rng.h"

namespace peftrun {
namespace {

using Vec = std::vector<double>;
using cpu::gemm;

Vec uniform(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

double rel(const Vec& a, const Vec& b) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

std::size_t sz(int a, int b) {
  return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

struct DoraCase {
  int n, in, out, r;
  bool bias, dropout;
};

class DoraDeviceMath : public ::testing::TestWithParam<DoraCase> {};

TEST_P(DoraDeviceMath, DeviceAlgorithmEqualsCpuTwin) {
  const DoraCase c = GetParam();
  const double s = 1.75, p = 0.3, ks = 1.0 / (1.0 - p);
  const Vec x = uniform(sz(c.n, c.in), 1), W = uniform(sz(c.out, c.in), 2, -0.3, 0.3);
  const Vec A = uniform(sz(c.r, c.in), 3, -0.3, 0.3), B = uniform(sz(c.out, c.r), 4, -0.5, 0.5);
  const Vec bias = uniform(c.out, 5), dy = uniform(sz(c.n, c.out), 6);
  std::vector<std::uint8_t> keep(sz(c.n, c.in));
  cpu::dropout_keep_mask(0xd20, static_cast<float>(p), keep.size(), keep.data());

  // n by the rank-r identity, then m = n perturbed so g = m / n is not 1.
  Vec w_sq(c.out), norm(c.out), nwork(cpu::dora_norm_workspace(c.out, c.r));
  cpu::row_sq_norms(W.data(), c.out, c.in, w_sq.data());
  cpu::dora_weight_norm(W.data(), w_sq.data(), A.data(), B.data(), c.out, c.in, c.r, s, norm.data(),
                        nwork.data());
  Vec m = norm;
  const Vec wiggle = uniform(c.out, 7, 0.5, 1.5);
  for (int j = 0; j < c.out; ++j) m[j] *= wiggle[j];

  // --- the CPU twin -----------------------------------------------------------------------
  Vec xa_ref(sz(c.n, c.r)), x_drop_ref(sz(c.n, c.in)), z(sz(c.n, c.out));
  Vec work(cpu::dora_linear_workspace(c.n, c.out, c.r)), y_ref(sz(c.n, c.out));
  cpu::DoraLinearArgs<double> a;
  a.lora = {c.n,
            c.in,
            c.out,
            c.r,
            s,
            W.data(),
            c.bias ? bias.data() : nullptr,
            A.data(),
            B.data(),
            c.dropout ? keep.data() : nullptr,
            ks,
            x_drop_ref.data(),
            xa_ref.data()};
  a.magnitude = m.data();
  a.weight_norm = norm.data();
  a.z = z.data();
  a.work = work.data();
  cpu::dora_linear_forward(a, x.data(), y_ref.data());
  Vec dA_ref = uniform(sz(c.r, c.in), 8), dB_ref = uniform(sz(c.out, c.r), 9);
  Vec dm_ref = uniform(c.out, 10), dx_ref(sz(c.n, c.in));
  const Vec dA0 = dA_ref, dB0 = dB_ref, dm0 = dm_ref;
  cpu::dora_linear_backward(a, x.data(), dy.data(), dx_ref.data(), dA_ref.data(), dB_ref.data(),
                            dm_ref.data());

  // --- the GPU's algorithm, step by step -----------------------------------------------------
  Vec g(c.out), sg(c.out), gm1(c.out);
  for (int j = 0; j < c.out; ++j) {
    g[j] = m[j] / norm[j];
    sg[j] = s * g[j];
    gm1[j] = g[j] - 1.0;
  }
  Vec xin = x, x_rest(sz(c.n, c.in), 0.0);
  if (c.dropout) {
    for (std::size_t i = 0; i < xin.size(); ++i) {
      xin[i] = keep[i] ? x[i] * ks : 0.0;
      x_rest[i] = x[i] - xin[i];
    }
  }
  Vec xa(sz(c.n, c.r)), v(sz(c.n, c.out)), t(sz(c.n, c.out)), y(sz(c.n, c.out));
  gemm(Trans::kNo, Trans::kYes, c.n, c.r, c.in, 1.0, xin.data(), c.in, A.data(), c.in, 0.0,
       xa.data(), c.r);
  // v = g * (x~ W^T): the alpha-vector matmul
  gemm(Trans::kNo, Trans::kYes, c.n, c.out, c.in, 1.0, xin.data(), c.in, W.data(), c.in, 0.0,
       v.data(), c.out);
  for (int i = 0; i < c.n; ++i) {
    for (int j = 0; j < c.out; ++j) v[sz(i, c.out) + j] *= g[j];
  }
  // y = [(x - x~) W^T +] v + b + (s g) * (xa B^T)
  gemm(Trans::kNo, Trans::kYes, c.n, c.out, c.r, 1.0, xa.data(), c.r, B.data(), c.r, 0.0, t.data(),
       c.out);
  if (c.dropout) {
    gemm(Trans::kNo, Trans::kYes, c.n, c.out, c.in, 1.0, x_rest.data(), c.in, W.data(), c.in, 0.0,
         y.data(), c.out);
  }
  for (int i = 0; i < c.n; ++i) {
    for (int j = 0; j < c.out; ++j) {
      const std::size_t at = sz(i, c.out) + j;
      y[at] += v[at] + (c.bias ? bias[j] : 0.0) + sg[j] * t[at];
    }
  }
  EXPECT_LT(rel(y, y_ref), 1e-13);
  EXPECT_LT(rel(xa, xa_ref), 1e-13);

  // backward: P = dy^T xa; colsum(dy * v) and dyg in one pass; rows; dxa via diag(g) B; dA; dx.
  Vec P(sz(c.out, c.r)), colsum(c.out, 0.0), dyg(sz(c.n, c.out));
  gemm(Trans::kYes, Trans::kNo, c.out, c.r, c.n, 1.0, dy.data(), c.out, xa.data(), c.r, 0.0,
       P.data(), c.r);
  for (int i = 0; i < c.n; ++i) {
    for (int j = 0; j < c.out; ++j) {
      const std::size_t at = sz(i, c.out) + j;
      colsum[j] += dy[at] * v[at];
      dyg[at] = dy[at] * (c.dropout ? gm1[j] : g[j]);
    }
  }
  Vec dA = dA0, dB = dB0, dm = dm0, Bg(sz(c.out, c.r)), dxa(sz(c.n, c.r)), dx(sz(c.n, c.in));
  for (int j = 0; j < c.out; ++j) {
    dm[j] += dora_row_grads(g[j], m[j], norm[j], s, colsum[j], B.data() + sz(j, c.r),
                            P.data() + sz(j, c.r), dB.data() + sz(j, c.r), c.r);
    for (int k = 0; k < c.r; ++k) Bg[sz(j, c.r) + k] = g[j] * B[sz(j, c.r) + k];
  }
  gemm(Trans::kNo, Trans::kNo, c.n, c.r, c.out, s, dy.data(), c.out, Bg.data(), c.r, 0.0,
       dxa.data(), c.r);
  gemm(Trans::kYes, Trans::kNo, c.r, c.in, c.n, 1.0, dxa.data(), c.r, xin.data(), c.in, 1.0,
       dA.data(), c.in);
  gemm(Trans::kNo, Trans::kNo, c.n, c.in, c.out, 1.0, dyg.data(), c.out, W.data(), c.in, 0.0,
       dx.data(), c.in);
  gemm(Trans::kNo, Trans::kNo, c.n, c.in, c.r, 1.0, dxa.data(), c.r, A.data(), c.in, 1.0, dx.data(),
       c.in);
  if (c.dropout) {
    for (std::size_t i = 0; i < dx.size(); ++i) dx[i] = keep[i] ? dx[i] * ks : 0.0;
    gemm(Trans::kNo, Trans::kNo, c.n, c.in, c.out, 1.0, dy.data(), c.out, W.data(), c.in, 1.0,
         dx.data(), c.in);
  }
  EXPECT_LT(rel(dx, dx_ref), 1e-12);
  EXPECT_LT(rel(dA, dA_ref), 1e-12);
  EXPECT_LT(rel(dB, dB_ref), 1e-12);
  EXPECT_LT(rel(dm, dm_ref), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Shapes, DoraDeviceMath,
                         ::testing::Values(DoraCase{7, 33, 17, 4, false, false},
                                           DoraCase{7, 33, 17, 4, true, false},
                                           DoraCase{5, 16, 24, 8, false, true},
                                           DoraCase{1, 9, 5, 3, true, true}),
                         [](const ::testing::TestParamInfo<DoraCase>& p) {
                           const DoraCase& c = p.param;
                           return "n" + std::to_string(c.n) + "_in" + std::to_string(c.in) +
                                  "_out" + std::to_string(c.out) + "_r" + std::to_string(c.r) +
                                  (c.bias ? "_bias" : "") + (c.dropout ? "_dropout" : "");
                         });

TEST(DoraDeviceMath, NormFromPartsEqualsTheCpuIdentity) {
  const int out = 13, in = 37, r = 6;
  const double s = 2.5;
  const Vec W = uniform(sz(out, in), 11, -0.3, 0.3), A = uniform(sz(r, in), 12, -0.4, 0.4);
  const Vec B = uniform(sz(out, r), 13);
  Vec w_sq(out), ref(out), work(cpu::dora_norm_workspace(out, r));
  cpu::row_sq_norms(W.data(), out, in, w_sq.data());
  cpu::dora_weight_norm(W.data(), w_sq.data(), A.data(), B.data(), out, in, r, s, ref.data(),
                        work.data());
  // The GPU's parts: P = W A^T and G = A A^T, then one row function per output.
  Vec P(sz(out, r)), G(sz(r, r)), got(out);
  gemm(Trans::kNo, Trans::kYes, out, r, in, 1.0, W.data(), in, A.data(), in, 0.0, P.data(), r);
  gemm(Trans::kNo, Trans::kYes, r, r, in, 1.0, A.data(), in, A.data(), in, 0.0, G.data(), r);
  for (int j = 0; j < out; ++j) {
    got[j] =
        dora_norm_from_parts(w_sq[j], B.data() + sz(j, r), P.data() + sz(j, r), G.data(), r, s);
  }
  EXPECT_LT(rel(got, ref), 1e-14);
  // The float instantiation the kernel runs (parts rounded to fp32, sums in double).
  std::vector<float> wf(w_sq.begin(), w_sq.end()), Bf(B.begin(), B.end()), Pf(P.begin(), P.end()),
      Gf(G.begin(), G.end());
  Vec got_f(out);
  for (int j = 0; j < out; ++j) {
    got_f[j] = dora_norm_from_parts(wf[j], Bf.data() + sz(j, r), Pf.data() + sz(j, r), Gf.data(), r,
                                    static_cast<float>(s));
  }
  EXPECT_LT(rel(got_f, ref), 1e-6);
}

TEST(DoraDeviceMath, NormOfAVanishingRowIsZeroNotNaN) {
  // W_j = -s (B A)_j with s = 1 and orthonormal A (G = I): P_j = -B_j, n^2 = w_sq - 2 * 5 + 5
  // = 0 in exact arithmetic; a w_sq rounded low makes it negative and the clamp gives 0.
  const float b[2] = {1.0f, -2.0f}, p[2] = {-1.0f, 2.0f}, G[4] = {1.0f, 0.0f, 0.0f, 1.0f};
  const float w_sq = 5.0f;
  EXPECT_EQ(dora_norm_from_parts(w_sq - 1e-6f, b, p, G, 2, 1.0f), 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Dropout masks: the shared formula is the model's (uniform01(key, i) >= p with p a float).
// ---------------------------------------------------------------------------------------------

TEST(DropoutMask, SharedFormulaIsTheModelsCounterBasedDraw) {
  const float p = 0.1f;
  const std::uint64_t key = derive_key(derive_key(1234, 77), 5);
  std::vector<std::uint8_t> keep(20000);
  cpu::dropout_keep_mask(key, p, keep.size(), keep.data());
  std::size_t kept = 0;
  for (std::size_t i = 0; i < keep.size(); ++i) {
    ASSERT_EQ(keep[i], uniform01(key, i) >= p ? 1 : 0) << i;
    kept += keep[i];
  }
  EXPECT_NEAR(static_cast<double>(kept) / keep.size(), 0.9, 0.01);
  cpu::dropout_keep_mask(key, 0.0f, keep.size(), keep.data());
  for (std::uint8_t k : keep) ASSERT_EQ(k, 1);
}

// ---------------------------------------------------------------------------------------------
// Non-finite scan (CPU twin of the device detector)
// ---------------------------------------------------------------------------------------------

TEST(NonfiniteScan, FindsInfAndNaNInEveryStorageType) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> f(100, 1.0f);
  f[99] = std::numeric_limits<float>::max();
  NonfiniteReport clean;
  cpu::nonfinite_scan(f.data(), DType::kF32, f.size(), clean);
  EXPECT_FALSE(clean.found());
  f[40] = -inf;
  f[7] = std::nanf("");
  NonfiniteReport r;
  cpu::nonfinite_scan(f.data(), DType::kF32, f.size(), r);
  EXPECT_EQ(r.count, 2u);
  EXPECT_EQ(r.first_index, 7u);

  std::vector<half_bits> h(50, float_to_half(65504.0f));  // fp16 max is finite
  NonfiniteReport rh;
  cpu::nonfinite_scan(h.data(), DType::kF16, h.size(), rh);
  EXPECT_FALSE(rh.found());
  h[31] = float_to_half(1e6f);  // overflows to +inf
  cpu::nonfinite_scan(h.data(), DType::kF16, h.size(), rh);
  EXPECT_EQ(rh.count, 1u);
  EXPECT_EQ(rh.first_index, 31u);

  std::vector<bf16_bits> b(50, float_to_bf16(3e38f));
  b[0] = float_to_bf16(std::nanf(""));
  b[49] = float_to_bf16(-inf);
  // Accumulates onto an existing report: counts add, the first index is the smallest.
  cpu::nonfinite_scan(b.data(), DType::kBF16, b.size(), rh);
  EXPECT_EQ(rh.count, 3u);
  EXPECT_EQ(rh.first_index, 0u);
}

// ---------------------------------------------------------------------------------------------
// Dynamic loss scaling (torch GradScaler's rule)
// ---------------------------------------------------------------------------------------------

TEST(LossScale, HalvesAndSkipsOnOverflowDoublesAfterTheInterval) {
  LossScaleConfig c;
  c.init_scale = 1024.0;
  c.growth_interval = 3;
  DynamicLossScale ls(c);
  EXPECT_EQ(ls.scale(), 1024.0);
  EXPECT_TRUE(ls.update(false));
  EXPECT_TRUE(ls.update(false));
  EXPECT_EQ(ls.scale(), 1024.0);
  EXPECT_FALSE(ls.update(true));  // overflow: skip, halve, count restarts
  EXPECT_EQ(ls.scale(), 512.0);
  EXPECT_EQ(ls.good_steps(), 0);
  EXPECT_TRUE(ls.update(false));
  EXPECT_TRUE(ls.update(false));
  EXPECT_EQ(ls.scale(), 512.0);
  EXPECT_TRUE(ls.update(false));  // third good step in a row: double
  EXPECT_EQ(ls.scale(), 1024.0);
  EXPECT_EQ(ls.good_steps(), 0);
  EXPECT_EQ(ls.inverse(), 1.0 / 1024.0);
}

TEST(LossScale, NeverDropsBelowTheFloorAndRestoresState) {
  LossScaleConfig c;
  c.init_scale = 4.0;
  c.min_scale = 1.0;
  DynamicLossScale ls(c);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(ls.update(true));
  EXPECT_EQ(ls.scale(), 1.0);
  ls.restore(8192.0, 17);
  EXPECT_EQ(ls.scale(), 8192.0);
  EXPECT_EQ(ls.good_steps(), 17);
  EXPECT_THROW(ls.restore(-1.0, 0), std::invalid_argument);
  EXPECT_THROW(ls.restore(2.0, -1), std::invalid_argument);
  LossScaleConfig bad;
  bad.backoff = 1.5;
  EXPECT_THROW(DynamicLossScale{bad}, std::invalid_argument);
  bad = LossScaleConfig{};
  bad.init_scale = 0.0;
  EXPECT_THROW(DynamicLossScale{bad}, std::invalid_argument);
}

}  // namespace
}  // namespace peftrun
