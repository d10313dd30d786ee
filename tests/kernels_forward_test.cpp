// Forward kernels against naive references written here, float-vs-double agreement, the fp16
// conversions of half.h, and AdamW against torch's update rule evaluated by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/activations.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/glu.h"
#include "kernels/half.h"
#include "kernels/lora_linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rope_frequencies.h"

namespace peftrun::cpu {
namespace {

using Vec = std::vector<double>;

Vec randn(std::size_t n, std::uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  Vec v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

template <typename T>
std::vector<T> cast(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
Vec to_double(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

double max_abs_diff(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// ||a - b|| / ||b||
double rel_diff(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

// ---------------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------------

// C = alpha op(A) op(B) + beta C with op(A) [M, K], op(B) [K, N], row-major with strides.
void naive_gemm(bool ta, bool tb, int M, int N, int K, double alpha, const Vec& A, int lda,
                const Vec& B, int ldb, double beta, Vec& C, int ldc) {
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) {
        const double a = ta ? A[k * lda + i] : A[i * lda + k];
        const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
        s += a * b;
      }
      C[i * ldc + j] = alpha * s + beta * C[i * ldc + j];
    }
  }
}

template <typename T>
void check_gemm_all_transposes(double tol) {
  const int M = 5, N = 7, K = 6;
  const double alpha = 0.7, beta = -0.3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      // Stored shapes, each with padding columns so lda/ldb/ldc exceed the logical width.
      const int a_rows = ta ? K : M, a_cols = ta ? M : K, lda = a_cols + 3;
      const int b_rows = tb ? N : K, b_cols = tb ? K : N, ldb = b_cols + 2;
      const int ldc = N + 4;
      const Vec A = randn(static_cast<std::size_t>(a_rows) * lda, 1);
      const Vec B = randn(static_cast<std::size_t>(b_rows) * ldb, 2);
      Vec C = randn(static_cast<std::size_t>(M) * ldc, 3);
      for (int i = 0; i < M; ++i) {
        for (int j = N; j < ldc; ++j) C[i * ldc + j] = 1234.5;  // padding must stay untouched
      }
      Vec expect = C;
      naive_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, expect, ldc);

      const std::vector<T> At = cast<T>(A), Bt = cast<T>(B);
      std::vector<T> Ct = cast<T>(C);
      gemm<T>(ta ? Trans::kYes : Trans::kNo, tb ? Trans::kYes : Trans::kNo, M, N, K, T(alpha),
              At.data(), lda, Bt.data(), ldb, T(beta), Ct.data(), ldc);
      EXPECT_LT(max_abs_diff(to_double(Ct), expect), tol) << "ta=" << ta << " tb=" << tb;
      for (int i = 0; i < M; ++i) {
        for (int j = N; j < ldc; ++j) EXPECT_EQ(Ct[i * ldc + j], T(1234.5));
      }
    }
  }
}

TEST(GemmForward, AllTransposeCombosWithPaddedStridesDouble) {
  check_gemm_all_transposes<double>(1e-13);
}

TEST(GemmForward, AllTransposeCombosWithPaddedStridesFloat) {
  check_gemm_all_transposes<float>(2e-5);
}

TEST(GemmForward, BetaZeroOverwritesNaNInC) {
  // beta = 0 must mean "C is output only": callers pass uninitialised buffers.
  const Vec A = randn(4 * 3, 4), B = randn(3 * 5, 5);
  Vec C(4 * 5, std::numeric_limits<double>::quiet_NaN());
  gemm<double>(Trans::kNo, Trans::kNo, 4, 5, 3, 1.0, A.data(), 3, B.data(), 5, 0.0, C.data(), 5);
  Vec expect(4 * 5, 0.0);
  naive_gemm(false, false, 4, 5, 3, 1.0, A, 3, B, 5, 0.0, expect, 5);
  EXPECT_LT(max_abs_diff(C, expect), 1e-14);
}

TEST(GemmForward, EmptyInnerDimensionScalesC) {
  Vec C = {1, 2, 3, 4, 5, 6};
  const double dummy = 0.0;
  gemm<double>(Trans::kNo, Trans::kYes, 2, 3, 0, 1.0, &dummy, 1, &dummy, 1, 0.5, C.data(), 3);
  EXPECT_EQ(C, (Vec{0.5, 1, 1.5, 2, 2.5, 3}));
  gemm<double>(Trans::kNo, Trans::kNo, 2, 3, 0, 1.0, &dummy, 1, &dummy, 1, 0.0, C.data(), 3);
  EXPECT_EQ(C, Vec(6, 0.0));
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

// softmax(Q K^T / sqrt(hd) + mask) V per (b, h), straight from the definition.
void naive_attention(const Vec& q, const Vec& k, const Vec& v, const std::int32_t* seg, int window,
                     double scale, double softcap, Vec& out, Vec& probs, int B, int T, int H,
                     int KV, int hd) {
  auto at = [](const Vec& x, int b, int t, int heads, int h, int d, int Tn, int hdn) {
    return x[((static_cast<std::size_t>(b) * Tn + t) * heads + h) * hdn + d];
  };
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const int kvh = h / (H / KV);
      for (int t = 0; t < T; ++t) {
        std::vector<double> s(T, -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < T; ++j) {
          const bool visible = j <= t && (window == 0 || j > t - window) &&
                               (!seg || seg[b * T + j] == seg[b * T + t]);
          if (!visible) continue;
          double dotp = 0.0;
          for (int d = 0; d < hd; ++d) {
            dotp += at(q, b, t, H, h, d, T, hd) * at(k, b, j, KV, kvh, d, T, hd);
          }
          s[j] = dotp * scale;
          if (softcap > 0) s[j] = softcap * std::tanh(s[j] / softcap);
          mx = std::max(mx, s[j]);
        }
        double z = 0.0;
        for (int j = 0; j < T; ++j) z += std::exp(s[j] - mx);  // exp(-inf) = 0 for masked
        for (int j = 0; j < T; ++j) {
          probs[((static_cast<std::size_t>(b) * H + h) * T + t) * T + j] = std::exp(s[j] - mx) / z;
        }
        for (int d = 0; d < hd; ++d) {
          double o = 0.0;
          for (int j = 0; j < T; ++j) {
            o += probs[((static_cast<std::size_t>(b) * H + h) * T + t) * T + j] *
                 at(v, b, j, KV, kvh, d, T, hd);
          }
          out[((static_cast<std::size_t>(b) * T + t) * H + h) * hd + d] = o;
        }
      }
    }
  }
}

// q_scale widens the scores; the tolerances grow with it because the scores themselves carry
// a relative rounding error of ~1e-16.
void check_attention_forward(int B, int T, int H, int KV, int hd,
                             const std::vector<std::int32_t>* segment, double q_scale,
                             int window = 0, double score_d = 0, double softcap = 0) {
  if (score_d == 0) score_d = hd;  // the scale's 1 / sqrt(d)
  const std::size_t nq = static_cast<std::size_t>(B) * T * H * hd;
  const std::size_t nkv = static_cast<std::size_t>(B) * T * KV * hd;
  const Vec q = randn(nq, 10, q_scale), k = randn(nkv, 11), v = randn(nkv, 12);
  const std::int32_t* seg = segment ? segment->data() : nullptr;
  const std::size_t np = static_cast<std::size_t>(B) * H * T * T;
  Vec out(nq, 99.0), probs(np, 99.0), ref_out(nq), ref_probs(np);
  attention_forward(q.data(), k.data(), v.data(), seg, window, attention_scale<double>(score_d),
                    softcap, out.data(), probs.data(), B, T, H, KV, hd);
  naive_attention(q, k, v, seg, window, 1.0 / std::sqrt(score_d), softcap, ref_out, ref_probs, B, T,
                  H, KV, hd);
  EXPECT_LT(max_abs_diff(out, ref_out), 1e-12 * q_scale);
  EXPECT_LT(max_abs_diff(probs, ref_probs), 1e-13 * q_scale);
  // Masked entries are exact zeros and every row is a distribution.
  for (std::size_t row = 0; row < np / T; ++row) {
    double sum = 0.0;
    for (int j = 0; j < T; ++j) {
      const double p = probs[row * T + j];
      ASSERT_TRUE(std::isfinite(p));
      if (ref_probs[row * T + j] == 0.0) {
        EXPECT_EQ(p, 0.0);
      }
      sum += p;
    }
    EXPECT_NEAR(sum, 1.0, 1e-14);
  }
}

TEST(AttentionForward, MatchesNaiveSoftmaxGqaH4KV2) {
  check_attention_forward(2, 9, 4, 2, 8, nullptr, 1.0);
}

TEST(AttentionForward, MatchesNaiveSoftmaxHEqualsKV) {
  check_attention_forward(1, 7, 3, 3, 5, nullptr, 1.0);
}

TEST(AttentionForward, MatchesNaiveWithSegmentMask) {
  // Sequence 0: documents of 2, 4 and 3 tokens; sequence 1: one document.
  const std::vector<std::int32_t> segment = {0, 0, 1, 1, 1, 1, 2, 2, 2, 7, 7, 7, 7, 7, 7, 7, 7, 7};
  check_attention_forward(2, 9, 4, 2, 8, &segment, 1.0);
}

TEST(AttentionForward, MatchesNaiveAcrossCausalRowBlocks) {
  // T well above the kernel's 64-row causal blocking and not a multiple of it, with document
  // boundaries inside and across blocks.
  const int T = 150;
  std::vector<std::int32_t> segment(2 * T);
  for (int t = 0; t < 2 * T; ++t) segment[t] = t < 40 ? 0 : (t < 100 ? 1 : (t < T ? 2 : 3));
  check_attention_forward(2, T, 4, 2, 8, nullptr, 1.0);
  check_attention_forward(2, T, 4, 2, 8, &segment, 1.0);
}

// Sliding windows (transformers' rule: query t sees keys s with t - s < window): shorter than a
// causal row block, across blocks, with packed documents, and one longer than the sequence.
TEST(AttentionForward, MatchesNaiveWithSlidingWindow) {
  const int T = 150;
  std::vector<std::int32_t> segment(2 * T);
  for (int t = 0; t < 2 * T; ++t) segment[t] = t < 40 ? 0 : (t < 100 ? 1 : (t < T ? 2 : 3));
  for (const int window : {1, 3, 70, 500}) {
    check_attention_forward(2, T, 4, 2, 8, nullptr, 1.0, window);
    check_attention_forward(2, T, 4, 2, 8, &segment, 1.0, window);
  }
}

// Gemma 2 / 3 scale the scores by 1 / sqrt(query_pre_attn_scalar), not 1 / sqrt(head_dim).
TEST(AttentionForward, MatchesNaiveWithAnotherScoreScale) {
  check_attention_forward(2, 40, 4, 2, 8, nullptr, 1.0, 0, 3.0);
  check_attention_forward(2, 40, 4, 2, 8, nullptr, 1.0, 7, 144.0);
}

// Gemma 2 caps the scores at softcap * tanh(S / softcap) before the mask: with scores of a few
// units and a cap of 2, most are well inside tanh's bend.
TEST(AttentionForward, MatchesNaiveWithSoftcappedScores) {
  const int T = 90;
  std::vector<std::int32_t> segment(2 * T);
  for (int t = 0; t < 2 * T; ++t) segment[t] = t < 30 ? 0 : (t < 70 ? 1 : 2);
  check_attention_forward(2, T, 4, 2, 8, nullptr, 3.0, 0, 0, 2.0);
  check_attention_forward(2, T, 4, 2, 8, &segment, 3.0, 20, 5.0, 2.0);
}

TEST(AttentionForward, LargeScoresStayFinite) {
  // Scores of O(1e3): a softmax without max-subtraction would overflow exp even in double.
  check_attention_forward(1, 8, 2, 1, 16, nullptr, 1000.0);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------

TEST(RmsNormForward, MatchesNaive) {
  const int rows = 4, dim = 33;
  const double eps = 1e-6;
  const Vec x = randn(rows * dim, 20, 3.0), w = randn(dim, 21);
  Vec y(x.size()), rstd(rows);
  rmsnorm_forward(x.data(), w.data(), 0.0, y.data(), rstd.data(), rows, dim, eps);
  Vec y1(x.size());  // Gemma's (1 + w)
  rmsnorm_forward(x.data(), w.data(), 1.0, y1.data(), rstd.data(), rows, dim, eps);
  for (int r = 0; r < rows; ++r) {
    double ms = 0.0;
    for (int i = 0; i < dim; ++i) ms += x[r * dim + i] * x[r * dim + i];
    const double rs = 1.0 / std::sqrt(ms / dim + eps);
    EXPECT_NEAR(rstd[r], rs, 1e-15 * rs);
    for (int i = 0; i < dim; ++i) {
      EXPECT_NEAR(y[r * dim + i], x[r * dim + i] * rs * w[i], 1e-14);
      EXPECT_NEAR(y1[r * dim + i], x[r * dim + i] * rs * (1.0 + w[i]), 1e-14);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------------

// The header's formula with HF's fp32 recipe for the angle: inv_freq = 1 / theta^(2i/hd) and
// angle = pos * inv_freq, each step in float; cos/sin in float.
Vec rope_reference(const Vec& x, const std::vector<std::int32_t>& pos, int heads, int hd,
                   float theta) {
  Vec out = x;
  const int half = hd / 2;
  for (std::size_t t = 0; t < pos.size(); ++t) {
    for (int h = 0; h < heads; ++h) {
      const std::size_t base = (t * heads + h) * hd;
      for (int i = 0; i < half; ++i) {
        const float inv_freq =
            1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(hd));
        const float angle = static_cast<float>(pos[t]) * inv_freq;
        const double c = std::cos(angle), s = std::sin(angle);
        out[base + i] = x[base + i] * c - x[base + i + half] * s;
        out[base + i + half] = x[base + i + half] * c + x[base + i] * s;
      }
    }
  }
  return out;
}

TEST(RopeForward, MatchesRotateHalfFormula) {
  const int heads = 3, hd = 16;
  const float theta = 10000.0f;
  const std::vector<std::int32_t> pos = {0, 1, 5, 0, 2, 100, 2047};
  const Vec x = randn(pos.size() * heads * hd, 30);
  Vec y = x;
  rope_forward(y.data(), pos.data(), static_cast<int>(pos.size()), heads, hd, hd,
               rope_inverse_frequencies(hd, {theta}).data(), 1.0f);
  EXPECT_LT(max_abs_diff(y, rope_reference(x, pos, heads, hd, theta)), 1e-15);

  // Against exact double-precision angles: the fp32 angle differs by up to ~pos * 2^-24 rad.
  for (std::size_t t = 0; t < pos.size(); ++t) {
    for (int i = 0; i < hd / 2; ++i) {
      const double angle = pos[t] * std::pow(10000.0, -2.0 * i / hd);
      const std::size_t b = t * heads * hd;  // head 0
      const double a = x[b + i], c = x[b + i + hd / 2];
      EXPECT_NEAR(y[b + i], a * std::cos(angle) - c * std::sin(angle),
                  3e-7 * (1 + pos[t]) * (std::abs(a) + std::abs(c)) + 1e-7);
    }
  }
}

TEST(RopeForward, PositionZeroIsIdentity) {
  const Vec x = randn(2 * 4 * 8, 31);
  Vec y = x;
  const std::vector<std::int32_t> pos = {0, 0};
  rope_forward(y.data(), pos.data(), 2, 4, 8, 8, rope_inverse_frequencies(8, {500000.0}).data(),
               1.0f);
  EXPECT_EQ(y, x);
}

TEST(RopeForward, BackwardInvertsForward) {
  const int heads = 2, hd = 64;
  const std::vector<std::int32_t> pos = {0, 3, 17, 511, 4095};
  const Vec x = randn(pos.size() * heads * hd, 32);
  Vec y = x;
  const std::vector<float> inv_freq = rope_inverse_frequencies(hd, {10000.0});
  rope_forward(y.data(), pos.data(), static_cast<int>(pos.size()), heads, hd, hd, inv_freq.data(),
               1.0f);
  rope_backward(y.data(), pos.data(), static_cast<int>(pos.size()), heads, hd, hd, inv_freq.data(),
                1.0f);
  // Exact up to cos^2 + sin^2 = 1 holding only to fp32 precision for the float cos/sin values.
  EXPECT_LT(max_abs_diff(y, x), 1e-6);
  EXPECT_LT(rel_diff(y, x), 2e-7);
}

// ---------------------------------------------------------------------------------------------
// SwiGLU / activations
// ---------------------------------------------------------------------------------------------

TEST(SwiGluForward, MatchesFormula) {
  const std::size_t n = 50;
  const Vec g = randn(n, 40, 5.0), u = randn(n, 41);
  Vec out(n);
  glu_forward(GluActivation::kSilu, g.data(), u.data(), out.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_NEAR(out[i], g[i] / (1.0 + std::exp(-g[i])) * u[i], 1e-14 * (1 + std::abs(g[i])));
  }
}

// GeGLU against PyTorch's own formula for gelu(approximate="tanh"), in double, and in float
// against that double value (the x sigmoid(2u) form has no cancellation for u << 0).
TEST(GeGluForward, MatchesPyTorchTanhFormula) {
  const std::size_t n = 64;
  const Vec g = randn(n, 42, 4.0), u = randn(n, 43);
  Vec out(n);
  glu_forward(GluActivation::kGeluTanh, g.data(), u.data(), out.data(), n);
  std::vector<float> gf(g.begin(), g.end()), uf(u.begin(), u.end()), outf(n);
  glu_forward(GluActivation::kGeluTanh, gf.data(), uf.data(), outf.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    const double x = g[i];
    const double inner = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
    const double want = 0.5 * x * (1.0 + std::tanh(inner)) * u[i];
    EXPECT_NEAR(out[i], want, 1e-14 * (1 + std::abs(want))) << x;
    const double x32 = gf[i];
    const double want32 =
        0.5 * x32 * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x32 + 0.044715 * x32 * x32 * x32))) *
        uf[i];
    EXPECT_NEAR(outf[i], want32, 1e-6 * std::abs(want32) + 1e-9 * std::abs(uf[i])) << x;
  }
  // Tails: gelu(x) -> x for x >> 0 and -> -0 for x << 0, with no overflow.
  EXPECT_EQ(gelu_tanh(30.0f), 30.0f);
  EXPECT_EQ(gelu_tanh(-30.0f), 0.0f);
  for (float x : {-1e4f, -100.0f, 100.0f, 1e4f}) {
    EXPECT_TRUE(std::isfinite(gelu_tanh(x))) << x;
    EXPECT_TRUE(std::isfinite(gelu_tanh_grad(x))) << x;
  }
}

TEST(SwiGluForward, ActivationsFiniteAtExtremes) {
  for (double x : {-1e4, -745.0, -100.0, 100.0, 745.0, 1e4}) {
    EXPECT_TRUE(std::isfinite(sigmoid(x))) << x;
    EXPECT_TRUE(std::isfinite(silu_grad(x))) << x;
    EXPECT_TRUE(std::isfinite(sigmoid(static_cast<float>(x)))) << x;
    EXPECT_TRUE(std::isfinite(silu_grad(static_cast<float>(x)))) << x;
  }
  EXPECT_EQ(silu(1e4), 1e4);
  EXPECT_EQ(silu(-1e4), 0.0);
  EXPECT_EQ(sigmoid(0.0), 0.5);
  EXPECT_NEAR(sigmoid(-50.0), std::exp(-50.0), 1e-35);  // relative precision kept in the tail
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy
// ---------------------------------------------------------------------------------------------

TEST(CrossEntropyForward, MatchesNaiveLogSoftmax) {
  const int n = 5, V = 13;
  const double gs = 0.25;
  const Vec logits = randn(n * V, 50, 3.0);
  const std::vector<std::int32_t> targets = {0, 12, kIgnoreIndex, 6, 6};
  Vec d(logits.size());
  const double loss =
      cross_entropy_forward_backward(logits.data(), targets.data(), d.data(), n, V, gs, 0.0);
  double expect = 0.0;
  for (int r = 0; r < n; ++r) {
    double z = 0.0;
    for (int j = 0; j < V; ++j) z += std::exp(logits[r * V + j]);
    for (int j = 0; j < V; ++j) {
      const double logp = logits[r * V + j] - std::log(z);
      if (targets[r] == kIgnoreIndex) {
        EXPECT_EQ(d[r * V + j], 0.0);
        continue;
      }
      if (j == targets[r]) expect -= logp;
      EXPECT_NEAR(d[r * V + j], (std::exp(logp) - (j == targets[r] ? 1.0 : 0.0)) * gs, 1e-15);
    }
  }
  EXPECT_NEAR(loss, expect, 1e-13);
}

TEST(CrossEntropyForward, InPlaceAliasMatchesSeparateBuffer) {
  const int n = 4, V = 9;
  const Vec logits = randn(n * V, 51);
  const std::vector<std::int32_t> targets = {8, kIgnoreIndex, 0, 4};
  Vec d(logits.size());
  const double l1 =
      cross_entropy_forward_backward(logits.data(), targets.data(), d.data(), n, V, 0.5, 0.0);
  Vec inplace = logits;
  const double l2 = cross_entropy_forward_backward(inplace.data(), targets.data(), inplace.data(),
                                                   n, V, 0.5, 0.0);
  const double l3 = cross_entropy_forward_backward<double>(logits.data(), targets.data(), nullptr,
                                                           n, V, 0.5, 0.0);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(l1, l3);
  EXPECT_EQ(inplace, d);
}

TEST(CrossEntropyForward, LargeLogitsStayFinite) {
  const int V = 4;
  const std::vector<float> logits = {1e4f, -1e4f, 9990.0f, 3.0f};
  const std::vector<std::int32_t> targets = {2};
  std::vector<float> d(V);
  const double loss =
      cross_entropy_forward_backward(logits.data(), targets.data(), d.data(), 1, V, 1.0f, 0.0f);
  EXPECT_NEAR(loss, 10.0 + std::log1p(std::exp(-10.0)), 1e-4);
  for (float g : d) EXPECT_TRUE(std::isfinite(g));
}

TEST(CrossEntropyForward, AllRowsIgnoredGiveZeroLossAndGradient) {
  const std::vector<double> logits = {1, 2, 3, 4, 5, 6};
  const std::vector<std::int32_t> targets = {kIgnoreIndex, kIgnoreIndex};
  Vec d(6, 5.0);
  EXPECT_EQ(cross_entropy_forward_backward(logits.data(), targets.data(), d.data(), 2, 3, 1.0, 0.0),
            0.0);
  EXPECT_EQ(d, Vec(6, 0.0));
}

// ---------------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------------

TEST(EmbeddingForward, CopiesTableRows) {
  const int vocab = 10, dim = 6;
  const Vec table = randn(vocab * dim, 60);
  const std::vector<std::int32_t> tokens = {3, 0, 9, 3};
  Vec out(tokens.size() * dim);
  embedding_forward(tokens.data(), table.data(), out.data(), 4, dim, 1.0);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    for (int j = 0; j < dim; ++j) EXPECT_EQ(out[i * dim + j], table[tokens[i] * dim + j]);
  }
  // Gemma's normalizer: every row times the scale.
  embedding_forward(tokens.data(), table.data(), out.data(), 4, dim, 2.5);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    for (int j = 0; j < dim; ++j) EXPECT_EQ(out[i * dim + j], table[tokens[i] * dim + j] * 2.5);
  }
}

// ---------------------------------------------------------------------------------------------
// LoRA linear
// ---------------------------------------------------------------------------------------------

TEST(LoraLinearForward, MatchesNaiveWithBiasAndDropout) {
  const int n = 4, in = 9, out = 5, r = 2;
  const Vec x = randn(n * in, 70), W = randn(out * in, 71), bias = randn(out, 72);
  const Vec A = randn(r * in, 73), B = randn(out * r, 74);
  std::vector<std::uint8_t> keep(n * in);
  for (int i = 0; i < n * in; ++i) keep[i] = (i * 7 % 3) != 0;
  for (bool dropout : {false, true}) {
    for (bool with_bias : {false, true}) {
      Vec x_drop(n * in), xa(n * r), y(n * out);
      LoraLinearArgs<double> a;
      a.n = n;
      a.in = in;
      a.out = out;
      a.r = r;
      a.scale = 2.0;
      a.W = W.data();
      a.A = A.data();
      a.B = B.data();
      a.xa = xa.data();
      a.bias = with_bias ? bias.data() : nullptr;
      if (dropout) {
        a.keep = keep.data();
        a.keep_scale = 1.0 / 0.9;
        a.x_drop = x_drop.data();
      }
      lora_linear_forward(a, x.data(), y.data());
      for (int i = 0; i < n; ++i) {
        for (int o = 0; o < out; ++o) {
          double base = with_bias ? bias[o] : 0.0, lora = 0.0;
          for (int j = 0; j < r; ++j) {
            double xaj = 0.0;
            for (int c = 0; c < in; ++c) {
              const double xd =
                  dropout ? (keep[i * in + c] ? x[i * in + c] / 0.9 : 0.0) : x[i * in + c];
              xaj += xd * A[j * in + c];
            }
            lora += B[o * r + j] * xaj;
          }
          for (int c = 0; c < in; ++c) base += x[i * in + c] * W[o * in + c];
          EXPECT_NEAR(y[i * out + o], base + 2.0 * lora, 1e-12);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// float vs double: the training precision agrees with the test precision
// ---------------------------------------------------------------------------------------------

constexpr double kFloatRel = 1e-5;

template <typename T>
Vec run_attention(const Vec& q, const Vec& k, const Vec& v, const Vec& dout,
                  const std::vector<std::int32_t>& seg, int B, int T_len, int H, int KV, int hd) {
  auto qt = cast<T>(q), kt = cast<T>(k), vt = cast<T>(v), dt = cast<T>(dout);
  std::vector<T> out(q.size()), probs(static_cast<std::size_t>(B) * H * T_len * T_len);
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
  attention_forward(qt.data(), kt.data(), vt.data(), seg.data(), 0, attention_scale<T>(hd), T(0),
                    out.data(), probs.data(), B, T_len, H, KV, hd);
  attention_backward(dt.data(), qt.data(), kt.data(), vt.data(), probs.data(), 0,
                     attention_scale<T>(hd), T(0), dq.data(), dk.data(), dv.data(), B, T_len, H, KV,
                     hd);
  Vec all = to_double(out);
  for (const auto* g : {&dq, &dk, &dv}) all.insert(all.end(), g->begin(), g->end());
  return all;
}

TEST(KernelPrecision, AttentionFloatMatchesDouble) {
  const int B = 2, T = 80, H = 4, KV = 2, hd = 8;  // T spans two causal row blocks
  const Vec q = randn(B * T * H * hd, 80), k = randn(B * T * KV * hd, 81);
  const Vec v = randn(B * T * KV * hd, 82), dout = randn(B * T * H * hd, 83);
  std::vector<std::int32_t> seg(B * T);
  for (int i = 0; i < B * T; ++i) seg[i] = i / 30;
  EXPECT_LT(rel_diff(run_attention<float>(q, k, v, dout, seg, B, T, H, KV, hd),
                     run_attention<double>(q, k, v, dout, seg, B, T, H, KV, hd)),
            kFloatRel);
}

template <typename T>
Vec run_rmsnorm_rope_glu(GluActivation act, const Vec& x, const Vec& w, const Vec& dy,
                         const Vec& up) {
  const int rows = 6, dim = 32;
  const std::vector<std::int32_t> pos = {0, 1, 2, 300, 4, 5};
  auto xt = cast<T>(x), wt = cast<T>(w), dyt = cast<T>(dy), ut = cast<T>(up);
  std::vector<T> y(x.size()), rstd(rows), dx(x.size()), s(x.size()), dg(x.size()), du(x.size());
  // Gemma's (1 + w) scale for GeGLU, LLaMA's w for SwiGLU: both norm variants.
  const T offset = act == GluActivation::kSilu ? T(0) : T(1);
  rmsnorm_forward(xt.data(), wt.data(), offset, y.data(), rstd.data(), rows, dim, T(1e-5));
  rmsnorm_backward(dyt.data(), xt.data(), wt.data(), offset, rstd.data(), dx.data(), rows, dim);
  const std::vector<float> inv_freq = rope_inverse_frequencies(dim / 2, {10000.0});
  rope_forward(y.data(), pos.data(), rows, 2, dim / 2, dim / 2, inv_freq.data(), 1.0f);
  glu_forward(act, y.data(), ut.data(), s.data(), x.size());
  glu_backward(act, dyt.data(), y.data(), ut.data(), dg.data(), du.data(), x.size());
  rope_backward(dg.data(), pos.data(), rows, 2, dim / 2, dim / 2, inv_freq.data(), 1.0f);
  Vec all;
  for (const auto* g : {&y, &dx, &s, &dg, &du}) all.insert(all.end(), g->begin(), g->end());
  return all;
}

TEST(KernelPrecision, RmsNormRopeGluFloatMatchDouble) {
  const Vec x = randn(6 * 32, 90), w = randn(32, 91), dy = randn(6 * 32, 92);
  const Vec up = randn(6 * 32, 93);
  for (const GluActivation act : {GluActivation::kSilu, GluActivation::kGeluTanh}) {
    EXPECT_LT(rel_diff(run_rmsnorm_rope_glu<float>(act, x, w, dy, up),
                       run_rmsnorm_rope_glu<double>(act, x, w, dy, up)),
              kFloatRel);
  }
}

template <typename T>
Vec run_cross_entropy(const Vec& logits, const std::vector<std::int32_t>& targets, int n, int V) {
  auto lt = cast<T>(logits);
  std::vector<T> d(logits.size());
  const double loss =
      cross_entropy_forward_backward(lt.data(), targets.data(), d.data(), n, V, T(0.125), T(0));
  Vec all = to_double(d);
  all.push_back(loss);
  return all;
}

TEST(KernelPrecision, CrossEntropyFloatMatchesDouble) {
  const int n = 8, V = 1000;
  const Vec logits = randn(n * V, 100, 4.0);
  std::vector<std::int32_t> targets = {1, 999, kIgnoreIndex, 500, 0, 42, kIgnoreIndex, 7};
  const Vec f = run_cross_entropy<float>(logits, targets, n, V);
  const Vec d = run_cross_entropy<double>(logits, targets, n, V);
  EXPECT_LT(rel_diff(f, d), kFloatRel);
  EXPECT_NEAR(f.back(), d.back(), 1e-5 * d.back());
}

template <typename T>
Vec run_lora(const Vec& x, const Vec& W, const Vec& bias, const Vec& A, const Vec& B, const Vec& dy,
             int n, int in, int out, int r) {
  auto xt = cast<T>(x), Wt = cast<T>(W), bt = cast<T>(bias), At = cast<T>(A), Bt = cast<T>(B);
  auto dyt = cast<T>(dy);
  std::vector<T> x_drop(x.size()), xa(static_cast<std::size_t>(n) * r), y(dy.size());
  std::vector<std::uint8_t> keep(x.size());
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = (i % 4) != 1;
  LoraLinearArgs<T> a;
  a.n = n;
  a.in = in;
  a.out = out;
  a.r = r;
  a.scale = T(0.5);
  a.W = Wt.data();
  a.bias = bt.data();
  a.A = At.data();
  a.B = Bt.data();
  a.keep = keep.data();
  a.keep_scale = T(1 / 0.75);
  a.x_drop = x_drop.data();
  a.xa = xa.data();
  lora_linear_forward(a, xt.data(), y.data());
  std::vector<T> dx(x.size()), dA(A.size()), dB(B.size()), dxa(xa.size());
  lora_linear_backward(a, xt.data(), dyt.data(), dx.data(), dA.data(), dB.data(), dxa.data());
  Vec all;
  for (const auto* g : {&y, &dx, &dA, &dB}) all.insert(all.end(), g->begin(), g->end());
  return all;
}

TEST(KernelPrecision, LoraLinearFloatMatchesDouble) {
  const int n = 12, in = 24, out = 20, r = 4;
  const Vec x = randn(n * in, 110), W = randn(out * in, 111), bias = randn(out, 112);
  const Vec A = randn(r * in, 113), B = randn(out * r, 114), dy = randn(n * out, 115);
  EXPECT_LT(rel_diff(run_lora<float>(x, W, bias, A, B, dy, n, in, out, r),
                     run_lora<double>(x, W, bias, A, B, dy, n, in, out, r)),
            kFloatRel);
}

// ---------------------------------------------------------------------------------------------
// half.h
// ---------------------------------------------------------------------------------------------

float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

bool is_half_nan(half_bits h) {
  return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

// The IEEE binary16 value of a bit pattern, from the definition (not from half.h).
double half_value(half_bits h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0x1f) {
    return mant ? std::numeric_limits<double>::quiet_NaN()
                : sign * std::numeric_limits<double>::infinity();
  }
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST(HalfConversion, AllBitPatternsDecodeAndRoundTrip) {
  for (std::uint32_t u = 0; u <= 0xffffu; ++u) {
    const auto h = static_cast<half_bits>(u);
    const float f = half_to_float(h);
    if (is_half_nan(h)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << u;
      const half_bits back = float_to_half(f);
      EXPECT_TRUE(is_half_nan(back)) << std::hex << u;
      EXPECT_EQ(back & 0x8000u, h & 0x8000u) << "NaN sign, " << std::hex << u;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), half_value(h)) << std::hex << u;
    EXPECT_EQ(std::signbit(f), (u & 0x8000u) != 0) << std::hex << u;  // -0 stays -0
    EXPECT_EQ(float_to_half(f), h) << std::hex << u;
  }
}

TEST(HalfConversion, RoundsToNearestEvenOnHandPickedValues) {
  const float ulp1 = std::ldexp(1.0f, -10);  // spacing of halves in [1, 2)
  struct Case {
    float f;
    half_bits h;
  };
  const Case cases[] = {
      {1.0f, 0x3c00},
      {1.0f + ulp1 / 2, 0x3c00},                        // tie, even neighbour is 1.0
      {1.0f + 3 * ulp1 / 2, 0x3c02},                    // tie between 0x3c01 and 0x3c02 -> even
      {std::nextafter(1.0f + ulp1 / 2, 2.0f), 0x3c01},  // just above the tie rounds up
      {std::nextafter(1.0f + ulp1 / 2, 0.0f), 0x3c00},  // just below rounds down
      {-2.5f, 0xc100},
      {65504.0f, 0x7bff},                                     // max finite
      {std::nextafter(65520.0f, 0.0f), 0x7bff},               // below the overflow tie
      {65520.0f, 0x7c00},                                     // tie with "65536" -> inf (even)
      {1e6f, 0x7c00},                                         // overflow
      {-1e6f, 0xfc00},                                        // negative overflow
      {std::numeric_limits<float>::infinity(), 0x7c00},       //
      {std::ldexp(1.0f, -14), 0x0400},                        // min normal
      {std::ldexp(1.0f, -24), 0x0001},                        // min subnormal
      {std::ldexp(1.0f, -25), 0x0000},                        // tie between 0 and min subnormal
      {std::nextafter(std::ldexp(1.0f, -25), 1.0f), 0x0001},  // just above that tie
      {-std::ldexp(1.0f, -25), 0x8000},                       // -> -0
      {std::ldexp(3.0f, -25), 0x0002},                        // 1.5 ulps: tie -> even (2)
      {std::ldexp(5.0f, -25), 0x0002},                        // 2.5 ulps: tie -> even (2)
      {std::ldexp(2047.0f, -25), 0x0400},  // 1023.5 subnormal ulps: tie -> min normal (even)
      {1e-45f, 0x0000},                    // float subnormal
      {-0.0f, 0x8000},
      {0.1f, 0x2e66},
      {3.14159265f, 0x4248},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(float_to_half(c.f), c.h) << std::hexfloat << c.f;
  }
  EXPECT_TRUE(is_half_nan(float_to_half(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_half_nan(float_to_half(bits_float(0x7f800001u))));  // signalling NaN too
}

TEST(HalfConversion, FloatToHalfIsNearestEvenOnRandomFloats) {
  // Oracle from the definition: the result and its two neighbours, compared in double (exact
  // for these values), with ties going to the even mantissa.
  std::mt19937_64 rng(120);
  std::uniform_int_distribution<std::uint32_t> exp_dist(100, 145);  // ~2^-27 .. 2^18
  std::uniform_int_distribution<std::uint32_t> bits_dist;
  for (int it = 0; it < 200000; ++it) {
    const std::uint32_t u = (bits_dist(rng) & 0x807fffffu) | (exp_dist(rng) << 23);
    const float f = bits_float(u);
    const half_bits h = float_to_half(f);
    const double x = std::abs(static_cast<double>(f));
    const double got = std::abs(half_value(h));
    ASSERT_EQ((h & 0x8000u) != 0, std::signbit(f));
    if (std::isinf(got)) {
      ASSERT_GE(x, 65520.0) << std::hexfloat << f;
      continue;
    }
    const half_bits mag = h & 0x7fffu;
    const double below = mag > 0 ? half_value(static_cast<half_bits>(mag - 1)) : -1.0;
    const double above = half_value(static_cast<half_bits>(mag + 1));  // may be inf: fine
    const double err = std::abs(got - x);
    ASSERT_LE(err, std::abs(x - below)) << std::hexfloat << f;
    ASSERT_LE(err, std::abs(above - x)) << std::hexfloat << f;
    if (err == std::abs(x - below) || err == std::abs(above - x)) {
      ASSERT_EQ(mag & 1u, 0u) << "tie not to even: " << std::hexfloat << f;
    }
  }
}

TEST(HalfConversion, HalfToRealBulk) {
  const half_bits src[] = {0x3c00, 0xc000, 0x0001, 0x7bff};
  double dst[4];
  half_to_real(src, dst, 4);
  EXPECT_EQ(dst[0], 1.0);
  EXPECT_EQ(dst[1], -2.0);
  EXPECT_EQ(dst[2], std::ldexp(1.0, -24));
  EXPECT_EQ(dst[3], 65504.0);
}

// The fp32 bulk path (vector instructions where the CPU has them) equals half_to_float for every
// one of the 65536 patterns, at every offset of the vector tail; NaNs stay NaN with their sign.
TEST(HalfConversion, FloatBulkMatchesScalarForEveryHalf) {
  std::vector<half_bits> src(65536 + 17);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<half_bits>(i);
  std::vector<float> dst(src.size());
  for (std::size_t start : {std::size_t(0), std::size_t(3), std::size_t(17)}) {
    const std::size_t n = src.size() - start;
    half_to_real(src.data() + start, dst.data(), n);
    for (std::size_t i = 0; i < n; ++i) {
      const half_bits h = src[start + i];
      const float want = half_to_float(h);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(dst[i])) << std::hex << h;
        ASSERT_EQ(std::signbit(dst[i]), std::signbit(want)) << std::hex << h;
        continue;
      }
      std::uint32_t got_bits, want_bits;
      std::memcpy(&got_bits, &dst[i], 4);
      std::memcpy(&want_bits, &want, 4);
      ASSERT_EQ(got_bits, want_bits) << "half 0x" << std::hex << h << " at offset " << start;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------------

TEST(AdamWStep, FirstStepLiteral) {
  // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) after the decay.
  double p = 1.0, g = 2.0, m = 0.0, v = 0.0;
  AdamWHyper h;
  h.lr = 0.01;
  h.weight_decay = 0.1;
  h.grad_scale = 0.5;  // effective gradient 1.0
  h.step = 1;
  adamw_step(&p, &g, &m, &v, 1, h);
  EXPECT_NEAR(p, 1.0 * (1 - 0.001) - 0.01 * 1.0 / (1.0 + 1e-8), 1e-15);
  EXPECT_NEAR(m, 0.1, 1e-16);
  EXPECT_NEAR(v, 0.001, 1e-17);
}

TEST(AdamWStep, ThreeStepsMatchTorchFormulaByHand) {
  // torch.optim.AdamW, single-tensor path, written out per element:
  //   param.mul_(1 - lr * wd); exp_avg.lerp_(g, 1 - b1); exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
  //   denom = exp_avg_sq.sqrt() / sqrt(1 - b2^t) + eps; param.addcdiv_(exp_avg, denom, -lr / (1 -
  //   b1^t))
  const std::size_t n = 4;
  Vec p = {0.5, -1.25, 3.0, 0.0};
  const Vec grads[3] = {{0.3, -0.2, 1.5, 1e-3}, {-0.1, -0.4, 0.7, 2e-3}, {0.2, 0.1, -2.0, 0.0}};
  AdamWHyper h;
  h.lr = 3e-3;
  h.beta1 = 0.85;
  h.beta2 = 0.95;
  h.eps = 1e-6;
  h.weight_decay = 0.05;
  h.grad_scale = 0.8;
  Vec m(n, 0.0), v(n, 0.0);
  Vec ep = p, em(n, 0.0), ev(n, 0.0);
  for (int t = 1; t <= 3; ++t) {
    h.step = t;
    adamw_step(p.data(), grads[t - 1].data(), m.data(), v.data(), n, h);
    for (std::size_t i = 0; i < n; ++i) {
      const double g = grads[t - 1][i] * h.grad_scale;
      ep[i] *= 1 - h.lr * h.weight_decay;
      em[i] += (1 - h.beta1) * (g - em[i]);
      ev[i] = ev[i] * h.beta2 + (1 - h.beta2) * g * g;
      const double denom = std::sqrt(ev[i]) / std::sqrt(1 - std::pow(h.beta2, t)) + h.eps;
      ep[i] += -(h.lr / (1 - std::pow(h.beta1, t))) * (em[i] / denom);
    }
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_NEAR(p[i], ep[i], 1e-15) << "step " << t << " i " << i;
      EXPECT_NEAR(m[i], em[i], 1e-15) << "step " << t << " i " << i;
      EXPECT_NEAR(v[i], ev[i], 1e-15) << "step " << t << " i " << i;
    }
  }
  // Float state follows the double one to float precision.
  std::vector<float> pf = {0.5f, -1.25f, 3.0f, 0.0f}, mf(n, 0.0f), vf(n, 0.0f);
  for (int t = 1; t <= 3; ++t) {
    h.step = t;
    const std::vector<float> gf = cast<float>(grads[t - 1]);
    adamw_step(pf.data(), gf.data(), mf.data(), vf.data(), n, h);
  }
  for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(pf[i], p[i], 1e-6);
}

TEST(AdamWStep, SumSquaresAccumulatesInDouble) {
  const std::vector<float> x = {1.0f, -2.0f, 3.0f};
  EXPECT_EQ(sum_squares(x.data(), x.size()), 14.0);
  // 2^20 equal terms: a float accumulator drifts by ~0.7% here, a double one by ~1e-11.
  std::vector<float> many(1 << 20, 1e-3f);
  const double exact = static_cast<double>(1e-3f) * 1e-3f * (1 << 20);
  EXPECT_NEAR(sum_squares(many.data(), many.size()), exact, 1e-9);
}

}  // namespace
}  // namespace peftrun::cpu
