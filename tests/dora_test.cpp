// DoRA kernels: the rank-r norm identity against the materialised ||W + sBA||, forward against a
// naive materialised-weight reference (with and without dropout), and finite-difference
// gradient checks in double (method as in kernels_gradcheck_test.cpp: L = sum(c * y)).
//
// The weight norm n is DETACHED in DoRA (PEFT, paper §4.3): the FD checks compute n once from
// the unperturbed parameters and keep it fixed while A / B are perturbed. That is exactly the
// function whose gradient backward returns.
#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "kernels/dora.h"

namespace peftrun::cpu {
namespace {

using namespace peftrun::testing_support;

constexpr double kMaxRel = 1e-7;

// Materialised reference: V = W + s B A, [out, in].
Vec materialise(const Vec& W, const Vec& A, const Vec& B, int out, int in, int r, double s) {
  Vec V = W;
  for (int j = 0; j < out; ++j) {
    for (int c = 0; c < in; ++c) {
      double acc = 0.0;
      for (int k = 0; k < r; ++k) acc += B[j * r + k] * A[k * in + c];
      V[j * in + c] += s * acc;
    }
  }
  return V;
}

Vec naive_row_norms(const Vec& V, int out, int in) {
  Vec n(out);
  for (int j = 0; j < out; ++j) {
    double acc = 0.0;
    for (int c = 0; c < in; ++c) acc += V[j * in + c] * V[j * in + c];
    n[j] = std::sqrt(acc);
  }
  return n;
}

Vec weight_norm_via_identity(const Vec& W, const Vec& A, const Vec& B, int out, int in, int r,
                             double s) {
  Vec w_sq(out), n(out), work(dora_norm_workspace(out, r));
  row_sq_norms(W.data(), out, in, w_sq.data());
  dora_weight_norm(W.data(), w_sq.data(), A.data(), B.data(), out, in, r, s, n.data(), work.data());
  return n;
}

// ---------------------------------------------------------------------------------------------
// Weight norm
// ---------------------------------------------------------------------------------------------

struct NormShape {
  int out, in, r;
};

TEST(DoraWeightNorm, RankIdentityEqualsMaterialisedNorm) {
  // Square, out > in, out < in, r = 1, r > in, a single output row.
  const NormShape shapes[] = {{6, 6, 3}, {9, 5, 1}, {4, 11, 2}, {12, 4, 6}, {1, 7, 3}, {7, 13, 1}};
  std::uint64_t seed = 100;
  for (const NormShape& sh : shapes) {
    const Vec W = randn(std::size_t(sh.out) * sh.in, seed++);
    const Vec A = randn(std::size_t(sh.r) * sh.in, seed++);
    const Vec B = randn(std::size_t(sh.out) * sh.r, seed++);
    const double s = 0.75;
    const Vec ref = naive_row_norms(materialise(W, A, B, sh.out, sh.in, sh.r, s), sh.out, sh.in);
    const Vec got = weight_norm_via_identity(W, A, B, sh.out, sh.in, sh.r, s);
    for (int j = 0; j < sh.out; ++j) {
      EXPECT_NEAR(got[j], ref[j], 1e-12 * ref[j])
          << "out=" << sh.out << " in=" << sh.in << " r=" << sh.r << " row " << j;
    }
  }
}

TEST(DoraWeightNorm, FloatIdentityIsCloseToDoubleReference) {
  const int out = 16, in = 24, r = 4;
  const Vec W = randn(out * in, 7), A = randn(r * in, 8, 0.2), B = randn(out * r, 9, 0.2);
  const float s = 2.0f;
  const Vec ref = naive_row_norms(materialise(W, A, B, out, in, r, s), out, in);
  std::vector<float> Wf(W.begin(), W.end()), Af(A.begin(), A.end()), Bf(B.begin(), B.end());
  std::vector<float> w_sq(out), n(out), work(dora_norm_workspace(out, r));
  row_sq_norms(Wf.data(), out, in, w_sq.data());
  dora_weight_norm(Wf.data(), w_sq.data(), Af.data(), Bf.data(), out, in, r, s, n.data(),
                   work.data());
  for (int j = 0; j < out; ++j) EXPECT_NEAR(n[j], ref[j], 1e-5 * ref[j]) << "row " << j;
}

TEST(DoraWeightNorm, ZeroBGivesTheBaseRowNormsAndCancellationClampsAtZero) {
  const int out = 5, in = 6, r = 2;
  const Vec W = randn(out * in, 21), A = randn(r * in, 22);
  // B = 0 (PEFT's init): n = ||W||_row, which is also DoRA's magnitude init.
  const Vec n0 = weight_norm_via_identity(W, A, Vec(out * r, 0.0), out, in, r, 1.5);
  const Vec ref0 = naive_row_norms(W, out, in);
  for (int j = 0; j < out; ++j) EXPECT_NEAR(n0[j], ref0[j], 1e-13 * ref0[j]);

  // W = -s B A exactly cancels: the expansion may round n^2 below 0; it must give 0 (or a
  // rounding-sized value), never NaN.
  const Vec B = randn(out * r, 23);
  const double s = 0.5;
  const Vec W_cancel = materialise(Vec(out * in, 0.0), A, B, out, in, r, -s);
  const Vec n = weight_norm_via_identity(W_cancel, A, B, out, in, r, s);
  for (int j = 0; j < out; ++j) {
    EXPECT_TRUE(std::isfinite(n[j])) << "row " << j;
    EXPECT_GE(n[j], 0.0);
    EXPECT_LT(n[j], 1e-6) << "row " << j;
  }
}

// ---------------------------------------------------------------------------------------------
// DoRA linear
// ---------------------------------------------------------------------------------------------

struct DoraFixture {
  int n = 5, in = 7, out = 6, r = 3;
  double s = 1.25, keep_scale = 1.0 / 0.7;
  Vec x, W, bias, A, B, m, c, weight_norm, x_drop, xa, z, y, work;
  std::vector<std::uint8_t> keep;
  DoraLinearArgs<double> args;

  explicit DoraFixture(bool with_dropout, bool with_bias = true) {
    x = randn(n * in, 41);
    W = randn(out * in, 42);
    bias = randn(out, 43);
    A = randn(r * in, 44);
    B = randn(out * r, 45);  // non-zero, else dA vanishes
    m = randn(out, 46);      // far from ||W|| so that g - 1 matters
    for (double& v : m) v = 1.0 + std::abs(v);
    c = randn(n * out, 47);
    x_drop.assign(x.size(), 0.0);
    xa.assign(std::size_t(n) * r, 0.0);
    z.assign(std::size_t(n) * out, 0.0);
    y.assign(std::size_t(n) * out, 0.0);
    work.assign(dora_linear_workspace(n, out, r), 0.0);
    weight_norm = weight_norm_via_identity(W, A, B, out, in, r, s);  // fixed: detached
    LoraLinearArgs<double>& l = args.lora;
    l.n = n;
    l.in = in;
    l.out = out;
    l.r = r;
    l.scale = s;
    l.W = W.data();
    l.bias = with_bias ? bias.data() : nullptr;
    l.A = A.data();
    l.B = B.data();
    l.xa = xa.data();
    args.magnitude = m.data();
    args.weight_norm = weight_norm.data();
    args.z = z.data();
    args.work = work.data();
    if (with_dropout) {
      std::mt19937_64 rng(48);
      std::bernoulli_distribution keep_dist(0.7);
      keep.resize(x.size());
      for (auto& k : keep) k = keep_dist(rng) ? 1 : 0;
      l.keep = keep.data();
      l.keep_scale = keep_scale;
      l.x_drop = x_drop.data();
    }
  }

  double loss() {
    dora_linear_forward(args, x.data(), y.data());
    return dot(c, y);
  }

  // Naive reference with the materialised weight: no dropout y = b + g (x V^T); dropout
  // y = x W^T + b + (g - 1)(x~ W^T) + g (x~ (sBA)^T), all per element.
  Vec reference() const {
    const Vec V = materialise(W, A, B, out, in, r, s);
    Vec ref(std::size_t(n) * out);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < out; ++j) {
        const double g = m[j] / weight_norm[j];
        double xw = 0, xdw = 0, xdv = 0;
        for (int k = 0; k < in; ++k) {
          const double xi = x[i * in + k];
          const double xd = keep.empty() ? xi : (keep[i * in + k] ? xi * keep_scale : 0.0);
          xw += xi * W[j * in + k];
          xdw += xd * W[j * in + k];
          xdv += xd * V[j * in + k];
        }
        const double b = args.lora.bias ? bias[j] : 0.0;
        ref[i * out + j] = keep.empty() ? b + g * xdv : xw + b + (g - 1.0) * xdw + g * (xdv - xdw);
      }
    }
    return ref;
  }
};

void check_forward(bool with_dropout, bool with_bias) {
  DoraFixture f(with_dropout, with_bias);
  f.loss();
  const Vec ref = f.reference();
  for (std::size_t i = 0; i < ref.size(); ++i) {
    EXPECT_NEAR(f.y[i], ref[i], 1e-12 * (1.0 + std::abs(ref[i]))) << "y[" << i << "]";
  }
}

TEST(DoraLinearForward, MatchesMaterialisedWeightNoDropout) {
  check_forward(false, true);
  check_forward(false, false);
}

TEST(DoraLinearForward, MatchesPeftDropoutFormWithMask) {
  check_forward(true, true);
  check_forward(true, false);
}

TEST(DoraLinearForward, InitialisedDoraIsTheBaseLayer) {
  // PEFT's init: B = 0 and m = ||W||_row, so g = 1 and y = x W^T + b in both forms (with
  // dropout the correction terms vanish: (g - 1) = 0 and B = 0).
  for (bool with_dropout : {false, true}) {
    DoraFixture f(with_dropout);
    std::fill(f.B.begin(), f.B.end(), 0.0);
    f.weight_norm = weight_norm_via_identity(f.W, f.A, f.B, f.out, f.in, f.r, f.s);
    f.args.weight_norm = f.weight_norm.data();
    row_sq_norms(f.W.data(), f.out, f.in, f.m.data());
    for (double& v : f.m) v = std::sqrt(v);
    f.loss();
    for (int i = 0; i < f.n; ++i) {
      for (int j = 0; j < f.out; ++j) {
        double base = f.bias[j];
        for (int k = 0; k < f.in; ++k) base += f.x[i * f.in + k] * f.W[j * f.in + k];
        EXPECT_NEAR(f.y[i * f.out + j], base, 1e-12 * (1.0 + std::abs(base)));
      }
    }
  }
}

TEST(DoraLinearForward, FloatMatchesDouble) {
  for (bool with_dropout : {false, true}) {
    DoraFixture f(with_dropout);
    f.loss();
    auto to_f = [](const Vec& v) { return std::vector<float>(v.begin(), v.end()); };
    std::vector<float> x = to_f(f.x), W = to_f(f.W), bias = to_f(f.bias), A = to_f(f.A),
                       B = to_f(f.B), m = to_f(f.m), nrm = to_f(f.weight_norm);
    std::vector<float> x_drop(x.size()), xa(f.xa.size()), z(f.z.size()), y(f.y.size()),
        work(dora_linear_workspace(f.n, f.out, f.r));
    DoraLinearArgs<float> a;
    a.lora.n = f.n;
    a.lora.in = f.in;
    a.lora.out = f.out;
    a.lora.r = f.r;
    a.lora.scale = static_cast<float>(f.s);
    a.lora.W = W.data();
    a.lora.bias = bias.data();
    a.lora.A = A.data();
    a.lora.B = B.data();
    a.lora.xa = xa.data();
    if (with_dropout) {
      a.lora.keep = f.keep.data();
      a.lora.keep_scale = static_cast<float>(f.keep_scale);
      a.lora.x_drop = x_drop.data();
    }
    a.magnitude = m.data();
    a.weight_norm = nrm.data();
    a.z = z.data();
    a.work = work.data();
    dora_linear_forward(a, x.data(), y.data());
    for (std::size_t i = 0; i < y.size(); ++i) {
      EXPECT_NEAR(y[i], f.y[i], 1e-5 * (1.0 + std::abs(f.y[i])));
    }
  }
}

void check_dora_gradients(bool with_dropout) {
  DoraFixture f(with_dropout);
  auto loss = [&] { return f.loss(); };
  loss();  // saved xa / z / x_drop

  // Parameter gradients start non-zero: backward must ADD. dx is poisoned: it must overwrite.
  const Vec dA0 = randn(f.A.size(), 50), dB0 = randn(f.B.size(), 51), dm0 = randn(f.m.size(), 52);
  Vec dA = dA0, dB = dB0, dm = dm0, dx(f.x.size(), 77.0);
  dora_linear_backward(f.args, f.x.data(), f.c.data(), dx.data(), dA.data(), dB.data(), dm.data());
  Vec gA(dA.size()), gB(dB.size()), gm(dm.size());
  for (std::size_t i = 0; i < dA.size(); ++i) gA[i] = dA[i] - dA0[i];
  for (std::size_t i = 0; i < dB.size(); ++i) gB[i] = dB[i] - dB0[i];
  for (std::size_t i = 0; i < dm.size(); ++i) gm[i] = dm[i] - dm0[i];

  EXPECT_LT(finite_difference_rel_error(f.x, dx, loss), kMaxRel) << "dx";
  EXPECT_LT(finite_difference_rel_error(f.A, gA, loss), kMaxRel) << "dA";
  EXPECT_LT(finite_difference_rel_error(f.B, gB, loss), kMaxRel) << "dB";
  EXPECT_LT(finite_difference_rel_error(f.m, gm, loss), kMaxRel) << "dm";

  // A second micro-batch adds the same gradients again; dx = nullptr is allowed.
  loss();
  dora_linear_backward<double>(f.args, f.x.data(), f.c.data(), nullptr, dA.data(), dB.data(),
                               dm.data());
  for (std::size_t i = 0; i < dA.size(); ++i) EXPECT_NEAR(dA[i], dA0[i] + 2 * gA[i], 1e-12);
  for (std::size_t i = 0; i < dB.size(); ++i) EXPECT_NEAR(dB[i], dB0[i] + 2 * gB[i], 1e-12);
  for (std::size_t i = 0; i < dm.size(); ++i) EXPECT_NEAR(dm[i], dm0[i] + 2 * gm[i], 1e-12);
}

TEST(DoraLinearGradcheck, NormDetachedNoDropout) {
  check_dora_gradients(false);
}

TEST(DoraLinearGradcheck, NormDetachedWithDropoutMask) {
  check_dora_gradients(true);
}

}  // namespace
}  // namespace peftrun::cpu
