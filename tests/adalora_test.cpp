// AdaLoRA: finite-difference checks of the SVD linear layer and the orthogonality penalty, the
// importance EMAs against hand-computed values, PEFT's cubic budget schedule, the global
// triplet ranking (ties, K = 0), the final fixed phase and determinism of the allocator.
#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/adalora.h"
#include "runtime/adapters/adalora_allocator.h"
#include "runtime/adapters/adalora_regulariser.h"
#include "runtime/adapters/adapter_layout.h"

namespace peftrun {
namespace {

using namespace peftrun::testing_support;

constexpr double kMaxRel = 1e-7;

// ---------------------------------------------------------------------------------------------
// SVD linear layer
// ---------------------------------------------------------------------------------------------

struct AdaLoraFixture {
  int n = 5, in = 7, out = 6, r = 3;
  double c = 2.0 / (3 + 1e-5), keep_scale = 1.0 / 0.7;
  Vec x, W, bias, A, E, B, cproj, x_drop, xa, y, work;
  std::vector<std::uint8_t> keep;
  cpu::AdaLoraLinearArgs<double> args;

  explicit AdaLoraFixture(bool with_dropout) {
    x = randn(n * in, 61);
    W = randn(out * in, 62);
    bias = randn(out, 63);
    A = randn(r * in, 64);
    E = randn(r, 65);  // non-zero (PEFT starts at E = 0, which would hide dA / dB bugs)
    B = randn(out * r, 66);
    cproj = randn(n * out, 67);
    x_drop.assign(x.size(), 0.0);
    xa.assign(std::size_t(n) * r, 0.0);
    y.assign(std::size_t(n) * out, 0.0);
    work.assign(cpu::adalora_linear_workspace(n, in, r), 0.0);
    cpu::LoraLinearArgs<double>& l = args.lora;
    l.n = n;
    l.in = in;
    l.out = out;
    l.r = r;
    l.scale = c;
    l.W = W.data();
    l.bias = bias.data();
    l.A = A.data();
    l.B = B.data();
    l.xa = xa.data();
    args.E = E.data();
    args.work = work.data();
    if (with_dropout) {
      std::mt19937_64 rng(68);
      std::bernoulli_distribution keep_dist(0.7);
      keep.resize(x.size());
      for (auto& k : keep) k = keep_dist(rng) ? 1 : 0;
      l.keep = keep.data();
      l.keep_scale = keep_scale;
      l.x_drop = x_drop.data();
    }
  }

  double loss() {
    cpu::adalora_linear_forward(args, x.data(), y.data());
    return dot(cproj, y);
  }
};

TEST(AdaLoraLinearForward, MatchesNaiveSvdProduct) {
  for (bool with_dropout : {false, true}) {
    AdaLoraFixture f(with_dropout);
    f.loss();
    for (int i = 0; i < f.n; ++i) {
      for (int j = 0; j < f.out; ++j) {
        double ref = f.bias[j];
        for (int k = 0; k < f.in; ++k) {
          const double xi = f.x[i * f.in + k];
          const double xd = f.keep.empty() ? xi : (f.keep[i * f.in + k] ? xi * f.keep_scale : 0.0);
          double delta = 0.0;  // (B (E * A))[j, k]
          for (int t = 0; t < f.r; ++t) delta += f.B[j * f.r + t] * f.E[t] * f.A[t * f.in + k];
          ref += xi * f.W[j * f.in + k] + f.c * xd * delta;
        }
        EXPECT_NEAR(f.y[i * f.out + j], ref, 1e-12 * (1.0 + std::abs(ref)));
      }
    }
  }
}

void check_adalora_gradients(bool with_dropout) {
  AdaLoraFixture f(with_dropout);
  auto loss = [&] { return f.loss(); };
  loss();
  // Forward's scratch may be reused by other layers before backward: poison it.
  std::fill(f.work.begin(), f.work.end(), 1e30);

  const Vec dA0 = randn(f.A.size(), 70), dE0 = randn(f.E.size(), 71), dB0 = randn(f.B.size(), 72);
  Vec dA = dA0, dE = dE0, dB = dB0, dx(f.x.size(), -5.0);
  cpu::adalora_linear_backward(f.args, f.x.data(), f.cproj.data(), dx.data(), dA.data(), dE.data(),
                               dB.data());
  Vec gA(dA.size()), gE(dE.size()), gB(dB.size());
  for (std::size_t i = 0; i < dA.size(); ++i) gA[i] = dA[i] - dA0[i];
  for (std::size_t i = 0; i < dE.size(); ++i) gE[i] = dE[i] - dE0[i];
  for (std::size_t i = 0; i < dB.size(); ++i) gB[i] = dB[i] - dB0[i];

  EXPECT_LT(finite_difference_rel_error(f.x, dx, loss), kMaxRel) << "dx";
  EXPECT_LT(finite_difference_rel_error(f.A, gA, loss), kMaxRel) << "dA";
  EXPECT_LT(finite_difference_rel_error(f.E, gE, loss), kMaxRel) << "dE";
  EXPECT_LT(finite_difference_rel_error(f.B, gB, loss), kMaxRel) << "dB";

  // Accumulation over a second micro-batch; dx = nullptr allowed.
  loss();
  cpu::adalora_linear_backward<double>(f.args, f.x.data(), f.cproj.data(), nullptr, dA.data(),
                                       dE.data(), dB.data());
  for (std::size_t i = 0; i < dA.size(); ++i) EXPECT_NEAR(dA[i], dA0[i] + 2 * gA[i], 1e-12);
  for (std::size_t i = 0; i < dE.size(); ++i) EXPECT_NEAR(dE[i], dE0[i] + 2 * gE[i], 1e-12);
  for (std::size_t i = 0; i < dB.size(); ++i) EXPECT_NEAR(dB[i], dB0[i] + 2 * gB[i], 1e-12);
}

TEST(AdaLoraLinearGradcheck, NoDropout) {
  check_adalora_gradients(false);
}

TEST(AdaLoraLinearGradcheck, WithDropoutMask) {
  check_adalora_gradients(true);
}

TEST(AdaLoraLinearGradcheck, PrunedTripletGetsNoAGradientButAnEGradient) {
  // E[k] = 0 (pruned, or PEFT's init): A[k, :] receives no gradient, E[k] does (that is how a
  // pruned or freshly initialised triplet can come back).
  AdaLoraFixture f(false);
  f.E[1] = 0.0;
  f.loss();
  Vec dA(f.A.size(), 0.0), dE(f.E.size(), 0.0), dB(f.B.size(), 0.0);
  cpu::adalora_linear_backward<double>(f.args, f.x.data(), f.cproj.data(), nullptr, dA.data(),
                                       dE.data(), dB.data());
  for (int j = 0; j < f.in; ++j) EXPECT_EQ(dA[1 * f.in + j], 0.0);
  EXPECT_NE(dE[1], 0.0);
}

// ---------------------------------------------------------------------------------------------
// Orthogonality regulariser
// ---------------------------------------------------------------------------------------------

double naive_orth(const Vec& P, int rows, int cols, bool is_A) {
  const int d = is_A ? rows : cols;
  double sq = 0.0;
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      double g = 0.0;
      if (is_A) {
        for (int k = 0; k < cols; ++k) g += P[i * cols + k] * P[j * cols + k];
      } else {
        for (int k = 0; k < rows; ++k) g += P[k * cols + i] * P[k * cols + j];
      }
      const double cij = g - (i == j ? 1.0 : 0.0);
      sq += cij * cij;
    }
  }
  return std::sqrt(sq);
}

void check_orth_reg(int rows, int cols, bool is_A, std::uint64_t seed) {
  Vec P = randn(std::size_t(rows) * cols, seed, 0.5);
  const double weight = 0.37;
  Vec work(cpu::orth_reg_workspace(rows, cols, is_A));
  const Vec g0 = randn(P.size(), seed + 1);
  Vec grad = g0;
  const double value = cpu::orth_reg(P.data(), rows, cols, is_A, weight, grad.data(), work.data());
  EXPECT_NEAR(value, naive_orth(P, rows, cols, is_A), 1e-12 * value);
  Vec g(P.size());
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = grad[i] - g0[i];  // added, not overwritten
  auto loss = [&] {
    return weight * cpu::orth_reg<double>(P.data(), rows, cols, is_A, 0.0, nullptr, work.data());
  };
  EXPECT_LT(finite_difference_rel_error(P, g, loss), kMaxRel);
}

TEST(AdaLoraOrthReg, AShapeGradientMatchesFiniteDifferences) {
  check_orth_reg(3, 7, true, 80);  // lora_A [r, in]
  check_orth_reg(1, 5, true, 82);  // r = 1
}

TEST(AdaLoraOrthReg, BShapeGradientMatchesFiniteDifferences) {
  check_orth_reg(7, 3, false, 84);  // lora_B [out, r]
  check_orth_reg(4, 1, false, 86);
}

TEST(AdaLoraOrthReg, OrthonormalMatrixHasZeroPenaltyAndNoGradient) {
  // Rows of A = e_0, e_2 (orthonormal): C = 0; torch's norm backward gives 0 there, not NaN.
  const int rows = 2, cols = 4;
  Vec P(rows * cols, 0.0);
  P[0 * cols + 0] = 1.0;
  P[1 * cols + 2] = 1.0;
  Vec grad(P.size(), 0.5), work(cpu::orth_reg_workspace(rows, cols, true));
  EXPECT_EQ(cpu::orth_reg(P.data(), rows, cols, true, 1.0, grad.data(), work.data()), 0.0);
  for (double g : grad) EXPECT_EQ(g, 0.5);
  // The same matrix transposed as a B [4, 2]: P^T P = I.
  Vec Pt(rows * cols, 0.0);
  Pt[0 * rows + 0] = 1.0;
  Pt[2 * rows + 1] = 1.0;
  Vec work_b(cpu::orth_reg_workspace(cols, rows, false));
  EXPECT_EQ(cpu::orth_reg(Pt.data(), cols, rows, false, 1.0, grad.data(), work_b.data()), 0.0);
}

// The descriptor table the CUDA backend uploads: A0, B0, A1, B1, ... with the layout's offsets
// and shapes; the term and weight formulas it shares with add_adalora_orth_regulariser.
TEST(AdaLoraOrthReg, MatricesFollowTheLayoutInTermOrder) {
  ModelConfig model;
  AdapterConfig cfg;
  cfg.type = AdapterType::kAdaLora;
  cfg.target_modules = {"q_proj", "down_proj"};
  cfg.init_r = 6;
  const AdapterLayout layout = AdapterLayout::plan(model, cfg);
  const std::vector<AdaLoraOrthMatrix> mats = adalora_orth_matrices(layout);
  ASSERT_EQ(mats.size(), 2 * layout.modules().size());
  for (std::size_t i = 0; i < layout.modules().size(); ++i) {
    const AdaptedModule& m = layout.modules()[i];
    const AdaLoraOrthMatrix& a = mats[2 * i];
    const AdaLoraOrthMatrix& b = mats[2 * i + 1];
    EXPECT_EQ(a.offset, m.a);
    EXPECT_EQ(a.rows, 6);
    EXPECT_EQ(a.cols, m.shape.in);
    EXPECT_EQ(a.is_A, 1);
    EXPECT_EQ(b.offset, m.b);
    EXPECT_EQ(b.rows, m.shape.out);
    EXPECT_EQ(b.cols, 6);
    EXPECT_EQ(b.is_A, 0);
  }
  cfg.orth_reg_weight = 0.5;
  const double norms[] = {1.0, 2.0, 4.0, 8.0};
  EXPECT_EQ(adalora_orth_term(cfg, norms, 4), 0.5 * 15.0 / 4.0);
  EXPECT_EQ(adalora_orth_weight(cfg, 4, 1024.0), 128.0f);  // 0.5 / 4 * 1024
}

// The host function is the sum of cpu::orth_reg over every A and B in module order.
TEST(AdaLoraOrthReg, FlatRegulariserIsTheMeanOverAllMatrices) {
  ModelConfig model;
  AdapterConfig cfg;
  cfg.type = AdapterType::kAdaLora;
  cfg.target_modules = {"v_proj", "up_proj"};
  cfg.init_r = 3;
  cfg.orth_reg_weight = 0.25;
  const AdapterLayout layout = AdapterLayout::plan(model, cfg);
  std::vector<float> params(layout.total(), 0.0f);
  layout.init_params(params.data(), 11);
  std::vector<float> grads(layout.total(), 0.5f), work;
  const double term = add_adalora_orth_regulariser(layout, cfg, params.data(), grads.data(), work);
  std::vector<double> norms;
  for (const AdaLoraOrthMatrix& m : adalora_orth_matrices(layout)) {
    std::vector<float> w(cpu::orth_reg_workspace(m.rows, m.cols, m.is_A != 0));
    norms.push_back(cpu::orth_reg(params.data() + m.offset, m.rows, m.cols, m.is_A != 0, 0.0f,
                                  static_cast<float*>(nullptr), w.data()));
  }
  EXPECT_EQ(term, adalora_orth_term(cfg, norms.data(), norms.size()));
  cfg.orth_reg_weight = 0;
  const std::vector<float> before = grads;
  EXPECT_EQ(add_adalora_orth_regulariser(layout, cfg, params.data(), grads.data(), work), 0.0);
  EXPECT_EQ(grads, before);
}

// ---------------------------------------------------------------------------------------------
// Importance EMAs
// ---------------------------------------------------------------------------------------------

TEST(AdaLoraImportance, MatchesHandComputedEmas) {
  // beta1 = 0.5, beta2 = 0.75 and dyadic inputs: every value below is exact in fp32.
  const std::vector<float> p = {2.0f, -1.0f, 0.5f, 0.0f};
  const std::vector<float> g = {0.25f, 3.0f, -2.0f, 7.0f};
  std::vector<float> ipt(4, 0.0f), unc(4, 0.0f);
  // ipt = |p g| = {0.5, 3, 1, 0}
  cpu::adalora_update_importance(p.data(), g.data(), ipt.data(), unc.data(), 4, 0.5, 0.75);
  // ipt_ema = 0.5 ipt; unc_ema = 0.25 |ipt - ipt_ema| (the NEW ema)
  EXPECT_EQ(ipt, (std::vector<float>{0.25f, 1.5f, 0.5f, 0.0f}));
  EXPECT_EQ(unc, (std::vector<float>{0.0625f, 0.375f, 0.125f, 0.0f}));
  cpu::adalora_update_importance(p.data(), g.data(), ipt.data(), unc.data(), 4, 0.5, 0.75);
  EXPECT_EQ(ipt, (std::vector<float>{0.375f, 2.25f, 0.75f, 0.0f}));
  // 0.75 * {0.0625, 0.375, 0.125} + 0.25 * |{0.5, 3, 1} - {0.375, 2.25, 0.75}|
  EXPECT_EQ(unc, (std::vector<float>{0.078125f, 0.46875f, 0.15625f, 0.0f}));

  // grad_scale (clipping) multiplies the gradient before |p g|.
  std::vector<float> ipt2(4, 0.0f), unc2(4, 0.0f);
  cpu::adalora_update_importance(p.data(), g.data(), ipt2.data(), unc2.data(), 4, 0.5, 0.75, 0.5);
  EXPECT_EQ(ipt2, (std::vector<float>{0.125f, 0.75f, 0.25f, 0.0f}));
}

TEST(AdaLoraImportance, DefaultBetasRoundLikeTorchFp32) {
  // torch: beta * t with beta rounded to fp32, (1 - beta) formed in double then rounded; every
  // op rounds to fp32. Reproduced here step by step.
  const double beta = 0.85;
  const float b = static_cast<float>(beta), cb = static_cast<float>(1.0 - beta);
  const std::vector<float> p = {0.013f, -0.7f, 1.9f}, g = {-3.1f, 0.021f, 0.4f};
  std::vector<float> ipt(3, 0.1f), unc(3, 0.2f);
  std::vector<float> ei = ipt, eu = unc;
  cpu::adalora_update_importance(p.data(), g.data(), ipt.data(), unc.data(), 3, beta, beta);
  for (int i = 0; i < 3; ++i) {
    const float cur = std::abs(p[i] * g[i]);
    const float bi = b * ei[i];
    const float ci = cb * cur;
    const float e = bi + ci;
    const float dev = std::abs(cur - e);
    const float bu = b * eu[i];
    const float cu = cb * dev;
    EXPECT_EQ(ipt[i], e);
    EXPECT_EQ(unc[i], bu + cu);
  }
}

// ---------------------------------------------------------------------------------------------
// Budget schedule
// ---------------------------------------------------------------------------------------------

TEST(AdaLoraBudget, CubicScheduleValues) {
  // b0 = 24 (init_r 12, 2 modules), bT = 16, tinit = 10, tfinal = 20, T = 100, deltaT = 5:
  // budget phase 10 < t <= 80, denominator 70.
  auto at = [](int t) { return adalora_budget_schedule(t, 24, 16, 10, 20, 100, 5); };
  for (int t : {0, 3, 10}) {  // warm-up, t <= tinit: full budget, no mask
    EXPECT_EQ(at(t).budget, 24) << t;
    EXPECT_FALSE(at(t).mask) << t;
  }
  // t = 11: (1 - 1/70)^3 = 0.95773.. -> 8 * 0.95773 + 16 = 23.66 -> 23; 11 % 5 != 0
  EXPECT_EQ(at(11).budget, 23);
  EXPECT_FALSE(at(11).mask);
  // t = 20: (6/7)^3 = 216/343 -> 16 + 5.04 -> 21; masks (20 % 5 == 0)
  EXPECT_EQ(at(20).budget, 21);
  EXPECT_TRUE(at(20).mask);
  // t = 45: 0.5^3 = 0.125 -> 17 exactly
  EXPECT_EQ(at(45).budget, 17);
  EXPECT_TRUE(at(45).mask);
  // t = 73: 0.1^3 -> 16.008 -> 16 (truncation); 73 % 5 != 0
  EXPECT_EQ(at(73).budget, 16);
  EXPECT_FALSE(at(73).mask);
  // t = T - tfinal = 80: the cubic reaches exactly bT
  EXPECT_EQ(at(80).budget, 16);
  EXPECT_TRUE(at(80).mask);
  // t > T - tfinal: target, mask
  EXPECT_EQ(at(81).budget, 16);
  EXPECT_TRUE(at(81).mask);
  // Monotone non-increasing over the budget phase.
  for (int t = 11; t <= 80; ++t) EXPECT_LE(at(t).budget, at(t - 1).budget) << t;
}

// ---------------------------------------------------------------------------------------------
// Allocator
// ---------------------------------------------------------------------------------------------

ModelConfig tiny_model() {
  ModelConfig m;
  m.dim = 8;
  m.n_layers = 1;
  m.n_heads = 2;
  m.n_kv_heads = 1;  // v_proj: out = 4, in = 8; q_proj: 8 x 8
  m.ffn_dim = 16;
  return m;
}

AdapterConfig ada_config(int init_r, int target_r, int tinit, int tfinal, int total, int deltaT) {
  AdapterConfig a;
  a.type = AdapterType::kAdaLora;
  a.target_modules = {"q_proj", "v_proj"};
  a.init_r = init_r;
  a.target_r = target_r;
  a.tinit = tinit;
  a.tfinal = tfinal;
  a.total_step = total;
  a.deltaT = deltaT;
  return a;
}

// Sets the EMAs of triplet k of module `mod` so that its score is S = sE + mean sA + mean sB:
// ipt = 1 everywhere and unc carries the score. The A row alternates 0 / 2 sA (mean sA).
void set_triplet(AdaLoraAllocator& al, const AdaptedModule& m, int k, float sE, float sA,
                 float sB) {
  AdaLoraState& st = al.state();
  st.ipt_ema[m.e + k] = 1.0f;
  st.unc_ema[m.e + k] = sE;
  for (int j = 0; j < m.shape.in; ++j) {
    const std::size_t o = m.a + std::size_t(k) * m.shape.in + j;
    st.ipt_ema[o] = 1.0f;
    st.unc_ema[o] = (j % 2 == 0) ? 0.0f : 2.0f * sA;  // in is even
  }
  for (int j = 0; j < m.shape.out; ++j) {
    const std::size_t o = m.b + std::size_t(j) * m.r + k;
    st.ipt_ema[o] = 1.0f;
    st.unc_ema[o] = sB;
  }
}

struct HandBuilt {
  AdapterLayout layout;
  AdaLoraAllocator al;
  std::vector<float> params;

  HandBuilt()
      : layout(AdapterLayout::plan(tiny_model(), ada_config(3, 1, 0, 0, 10, 1))),
        al(layout, ada_config(3, 1, 0, 0, 10, 1), 10),
        params(layout.total(), 0.0f) {
    const auto& mods = layout.modules();
    // Module 0 (q_proj) S = {5, 1, 3}; module 1 (v_proj) S = {2, 3, 7}: S = 3 is a tie.
    set_triplet(al, mods[0], 0, 1.0f, 2.0f, 2.0f);
    set_triplet(al, mods[0], 1, 0.5f, 0.25f, 0.25f);
    set_triplet(al, mods[0], 2, 1.0f, 1.0f, 1.0f);
    set_triplet(al, mods[1], 0, 0.0f, 1.5f, 0.5f);
    set_triplet(al, mods[1], 1, 2.0f, 0.5f, 0.5f);
    set_triplet(al, mods[1], 2, 4.0f, 1.0f, 2.0f);
    for (const auto& m : mods) {
      for (int k = 0; k < 3; ++k) params[m.e + k] = 10.0f + k;
    }
  }

  std::vector<float> e_of(int mod) const {
    const auto& m = layout.modules()[mod];
    return {params[m.e], params[m.e + 1], params[m.e + 2]};
  }
};

TEST(AdaLoraAllocator, TripletScoresCombineEAndMeansOfAAndB) {
  HandBuilt h;
  EXPECT_EQ(h.al.init_budget(), 6);
  EXPECT_EQ(h.al.target_budget(), 2);
  h.al.mask_to_budget(6, h.params.data());
  EXPECT_EQ(h.al.last_scores(), (std::vector<float>{5, 1, 3, 2, 3, 7}));
}

TEST(AdaLoraAllocator, MaskToBudgetRanksAllModulesTogether) {
  {
    HandBuilt h;  // K = 1: threshold 1 -> only module 0 triplet 1
    h.al.mask_to_budget(5, h.params.data());
    EXPECT_EQ(h.al.ranks(), (std::vector<int>{2, 3}));
    EXPECT_EQ(h.e_of(0), (std::vector<float>{10, 0, 12}));
    EXPECT_EQ(h.e_of(1), (std::vector<float>{10, 11, 12}));
  }
  {
    HandBuilt h;  // K = 2: threshold 2 -> one triplet from each module
    h.al.mask_to_budget(4, h.params.data());
    EXPECT_EQ(h.al.rank_pattern(),
              (std::vector<std::vector<bool>>{{true, false, true}, {false, true, true}}));
    EXPECT_EQ(h.e_of(0), (std::vector<float>{10, 0, 12}));
    EXPECT_EQ(h.e_of(1), (std::vector<float>{0, 11, 12}));
    // A and B are never touched by masking.
    for (std::size_t i = 0; i < h.params.size(); ++i) {
      bool is_e = false;
      for (const auto& m : h.layout.modules()) is_e |= (i >= m.e && i < m.e + 3);
      if (!is_e) {
        EXPECT_EQ(h.params[i], 0.0f) << i;
      }
    }
  }
}

TEST(AdaLoraAllocator, TiesAtTheThresholdAreAllPrunedAsInPeft) {
  HandBuilt h;  // K = 3: threshold = 3rd smallest = 3, shared by two triplets: 4 pruned
  h.al.mask_to_budget(3, h.params.data());
  EXPECT_EQ(h.al.rank_pattern(),
            (std::vector<std::vector<bool>>{{true, false, false}, {false, false, true}}));
  EXPECT_EQ(h.al.ranks(), (std::vector<int>{1, 1}));
  EXPECT_EQ(h.e_of(0), (std::vector<float>{10, 0, 0}));
  EXPECT_EQ(h.e_of(1), (std::vector<float>{0, 0, 12}));
}

TEST(AdaLoraAllocator, KZeroOrNegativePrunesNothing) {
  for (int budget : {6, 7}) {  // K = 0 (PEFT's kthvalue would raise) and K < 0
    HandBuilt h;
    h.al.mask_to_budget(2, h.params.data());  // a previous mask...
    for (const auto& m : h.layout.modules()) {
      for (int k = 0; k < 3; ++k) h.params[m.e + k] = 10.0f + k;  // ...regrown by the optimizer
    }
    h.al.mask_to_budget(budget, h.params.data());
    EXPECT_EQ(h.al.ranks(), (std::vector<int>{3, 3})) << budget;
    EXPECT_EQ(h.e_of(0), (std::vector<float>{10, 11, 12}));
    EXPECT_EQ(h.e_of(1), (std::vector<float>{10, 11, 12}));
    EXPECT_TRUE(h.al.state().has_pattern);
  }
}

// A deterministic pseudo-training run: params / grads from a fixed stream each step.
void fake_step(std::vector<float>& params, std::vector<float>& grads, int step,
               const AdapterLayout& lay) {
  std::mt19937_64 rng(1000 + step);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const auto& t : lay.tensors()) {
    for (std::size_t i = 0; i < t.numel(); ++i) {
      params[t.offset + i] += 0.01f * dist(rng);
      grads[t.offset + i] = dist(rng);
    }
  }
}

TEST(AdaLoraAllocator, ImportanceCoversExactlyTheAdapterTensors) {
  const AdapterConfig cfg = ada_config(3, 1, 0, 2, 6, 1);
  const AdapterLayout lay = AdapterLayout::plan(tiny_model(), cfg);
  AdaLoraAllocator al(lay, cfg, 6);
  std::vector<float> params(lay.total(), 0.0f), grads(lay.total(), 0.0f);
  lay.init_params(params.data(), 5);
  fake_step(params, grads, 0, lay);
  // Padding: non-zero grads there must be ignored (only A / B / E are scored).
  std::vector<bool> in_tensor(lay.total(), false);
  for (const auto& t : lay.tensors()) {
    for (std::size_t i = 0; i < t.numel(); ++i) in_tensor[t.offset + i] = true;
  }
  for (std::size_t i = 0; i < lay.total(); ++i) {
    if (!in_tensor[i]) {
      grads[i] = 1.0f;
      params[i] = 1.0f;
    }
  }
  std::vector<float> ipt(lay.total(), 0.0f), unc(lay.total(), 0.0f);
  for (const auto& t : lay.tensors()) {
    cpu::adalora_update_importance(params.data() + t.offset, grads.data() + t.offset,
                                   ipt.data() + t.offset, unc.data() + t.offset, t.numel(),
                                   cfg.beta1, cfg.beta2, 0.5);
  }
  al.update_and_allocate(0, params.data(), grads.data(), 0.5);  // t = 0 <= tinit: no mask
  EXPECT_EQ(al.state().ipt_ema, ipt);
  EXPECT_EQ(al.state().unc_ema, unc);
  EXPECT_FALSE(al.state().has_pattern);
  EXPECT_EQ(al.ranks(), (std::vector<int>{3, 3}));
}

TEST(AdaLoraAllocator, DeltaTMasksOnlyOnMultiples) {
  // tinit = 1, T = 20, tfinal = 4, deltaT = 3: masks at t = 3, 6, ... (t > tinit).
  const AdapterConfig cfg = ada_config(3, 1, 1, 4, 20, 3);
  const AdapterLayout lay = AdapterLayout::plan(tiny_model(), cfg);
  AdaLoraAllocator al(lay, cfg, 1000);  // total_step set: train steps are ignored
  EXPECT_EQ(al.total_step(), 20);
  std::vector<float> params(lay.total(), 0.0f), grads(lay.total(), 0.0f);
  lay.init_params(params.data(), 6);
  for (int t = 0; t < 16; ++t) {
    fake_step(params, grads, t, lay);
    for (const auto& m : lay.modules()) {
      for (int k = 0; k < 3; ++k) params[m.e + k] = 1.0f;  // "trained" E, never zero
    }
    al.update_and_allocate(t, params.data(), grads.data());
    const bool masked = t > 1 && t % 3 == 0;
    EXPECT_EQ(al.state().has_pattern, t >= 3) << t;
    int zeros = 0;
    for (const auto& m : lay.modules()) {
      for (int k = 0; k < 3; ++k) zeros += params[m.e + k] == 0.0f ? 1 : 0;
    }
    if (masked) {
      const int budget = al.budget_schedule(t).budget;
      EXPECT_GE(zeros, al.init_budget() - budget) << t;
    } else {
      EXPECT_EQ(zeros, 0) << t;  // between masks nothing is forced to 0
    }
  }
}

TEST(AdaLoraAllocator, FinalStepFixesThePatternAndLaterStepsReapplyIt) {
  // T = 8, tfinal = 3: budget phase t < 5, final mask at t = 5, fixed phase t = 6, 7.
  const AdapterConfig cfg = ada_config(3, 1, 0, 3, 8, 1);
  const AdapterLayout lay = AdapterLayout::plan(tiny_model(), cfg);
  AdaLoraAllocator al(lay, cfg, 8);
  std::vector<float> params(lay.total(), 0.0f), grads(lay.total(), 0.0f);
  lay.init_params(params.data(), 7);
  for (int t = 0; t < 5; ++t) {
    fake_step(params, grads, t, lay);
    al.update_and_allocate(t, params.data(), grads.data());
  }
  EXPECT_FALSE(al.state().fixed);

  // t = 5: no EMA update (fresh gradients are ignored), mask at the target budget from the
  // EMAs as they were after t = 4, then the EMAs are reset.
  fake_step(params, grads, 5, lay);
  AdaLoraAllocator expected = al;
  std::vector<float> expected_params = params;
  expected.mask_to_budget(expected.target_budget(), expected_params.data());
  al.update_and_allocate(5, params.data(), grads.data());
  EXPECT_TRUE(al.state().fixed);
  EXPECT_EQ(al.state().mask, expected.state().mask);
  EXPECT_EQ(params, expected_params);
  EXPECT_EQ(al.last_scores(), expected.last_scores());
  int kept = 0;
  for (int r : al.ranks()) kept += r;
  EXPECT_LE(kept, al.target_budget());
  for (float v : al.state().ipt_ema) ASSERT_EQ(v, 0.0f);
  for (float v : al.state().unc_ema) ASSERT_EQ(v, 0.0f);
  const auto pattern = al.rank_pattern();
  const std::uint64_t sum = al.mask_checksum();

  // t = 6, 7: the optimizer regrows pruned E; the pattern zeroes them again, keeps the rest,
  // and nothing else changes (no EMA update, no re-ranking).
  for (int t = 6; t < 8; ++t) {
    fake_step(params, grads, t, lay);
    for (const auto& m : lay.modules()) {
      for (int k = 0; k < 3; ++k) params[m.e + k] = 3.0f + k;
    }
    al.update_and_allocate(t, params.data(), grads.data());
    EXPECT_EQ(al.rank_pattern(), pattern);
    EXPECT_EQ(al.mask_checksum(), sum);
    for (float v : al.state().ipt_ema) ASSERT_EQ(v, 0.0f);
    for (std::size_t i = 0; i < lay.modules().size(); ++i) {
      const auto& m = lay.modules()[i];
      for (int k = 0; k < 3; ++k) {
        EXPECT_EQ(params[m.e + k], pattern[i][k] ? 3.0f + k : 0.0f) << "module " << i << " " << k;
      }
    }
  }
}

TEST(AdaLoraAllocator, DeterministicStateAndChecksum) {
  const AdapterConfig cfg = ada_config(3, 1, 0, 2, 10, 1);
  const AdapterLayout lay = AdapterLayout::plan(tiny_model(), cfg);
  auto run = [&](std::vector<float>& params) {
    AdaLoraAllocator al(lay, cfg, 10);
    std::vector<float> grads(lay.total(), 0.0f);
    params.assign(lay.total(), 0.0f);
    lay.init_params(params.data(), 9);
    for (int t = 0; t < 7; ++t) {
      fake_step(params, grads, t, lay);
      al.update_and_allocate(t, params.data(), grads.data());
    }
    return al;
  };
  std::vector<float> p1, p2;
  const AdaLoraAllocator a1 = run(p1), a2 = run(p2);
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(a1.state().ipt_ema, a2.state().ipt_ema);
  EXPECT_EQ(a1.state().unc_ema, a2.state().unc_ema);
  EXPECT_EQ(a1.state().mask, a2.state().mask);
  EXPECT_EQ(a1.mask_checksum(), a2.mask_checksum());

  // One flipped mask bit changes the digest.
  AdaLoraAllocator a3 = a1;
  a3.state().mask[4] = a3.state().mask[4] != 0.0f ? 0.0f : 1.0f;
  EXPECT_NE(a3.mask_checksum(), a1.mask_checksum());
}

TEST(AdaLoraAllocator, RejectsWhatPeftRejects) {
  const ModelConfig model = tiny_model();
  const AdapterConfig ok = ada_config(3, 1, 0, 2, 10, 1);
  const AdapterLayout lay = AdapterLayout::plan(model, ok);
  EXPECT_THROW(AdaLoraAllocator(lay, ada_config(3, 1, 8, 2, 10, 1), 10), std::invalid_argument);
  EXPECT_THROW(AdaLoraAllocator(lay, ada_config(3, 1, 0, 2, 10, 0), 10), std::invalid_argument);
  AdapterConfig lora = ok;
  lora.type = AdapterType::kLora;
  EXPECT_THROW(AdaLoraAllocator(AdapterLayout::plan(model, lora), ok, 10), std::invalid_argument);
  // total_step = 0 means train.steps.
  EXPECT_EQ(AdaLoraAllocator(lay, ada_config(3, 1, 0, 2, 0, 1), 50).total_step(), 50);
}

}  // namespace
}  // namespace peftrun
