// Finite-difference gradient checks, in double precision, for every backward in kernels/.
//
// Method: for a kernel y = f(x) draw random inputs and a random projection c, define the scalar
// L(x) = sum(c * f(x)), so dL/dy = c. The analytic gradient is backward(dy = c); the numerical one
// is the central difference (L(x + h e_i) - L(x - h e_i)) / 2h for every input element. In double
// with h = 1e-6 that is accurate to ~1e-9 relative (observed), so the bound ||num - ana|| / ||num||
// < 1e-7 has ample margin while any real mistake (a wrong sign, factor, mask or index) shows up
// as an O(1) error.
#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/glu.h"
#include "kernels/lora_linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rope_frequencies.h"

namespace peftrun::cpu {
namespace {

using namespace peftrun::testing_support;

constexpr double kMaxRel = 1e-7;  // max ||num - ana|| / ||num||

// ---------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------

TEST(RmsNormGradcheck, DxMatchesFiniteDifferences) {
  const int rows = 5, dim = 16;
  const double eps = 1e-5;
  Vec x = randn(rows * dim, 1);
  const Vec w = randn(dim, 2);
  const Vec c = randn(rows * dim, 3);
  Vec y(x.size()), rstd(rows);

  for (const double offset : {0.0, 1.0}) {  // LLaMA's w, Gemma's 1 + w
    auto loss = [&] {
      rmsnorm_forward(x.data(), w.data(), offset, y.data(), rstd.data(), rows, dim, eps);
      return dot(c, y);
    };
    loss();  // fills rstd for backward
    Vec dx(x.size());
    rmsnorm_backward(c.data(), x.data(), w.data(), offset, rstd.data(), dx.data(), rows, dim);
    EXPECT_LT(finite_difference_rel_error(x, dx, loss), kMaxRel) << "offset " << offset;
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------------

TEST(RopeGradcheck, BackwardMatchesFiniteDifferences) {
  const int tokens = 6, heads = 3, hd = 8;
  const std::vector<float> inv_freq = rope_inverse_frequencies(hd, {10000.0});
  const std::vector<std::int32_t> pos = {0, 1, 2, 7, 0, 913};  // incl. a restart and a far one
  Vec x = randn(tokens * heads * hd, 11);
  const Vec c = randn(x.size(), 12);

  auto loss = [&] {
    Vec y = x;
    rope_forward(y.data(), pos.data(), tokens, heads, hd, hd, inv_freq.data(), 1.0f);
    return dot(c, y);
  };
  Vec dx = c;
  rope_backward(dx.data(), pos.data(), tokens, heads, hd, hd, inv_freq.data(), 1.0f);
  EXPECT_LT(finite_difference_rel_error(x, dx, loss), kMaxRel);
}

// Partial rotary (Phi-4-mini's kind): 6 of the 10 channels of each head rotate; the other 4
// pass with gradient 1.
TEST(RopeGradcheck, PartialRotaryBackwardMatchesFiniteDifferences) {
  const int tokens = 5, heads = 2, hd = 10, rd = 6;
  const std::vector<float> inv_freq = rope_inverse_frequencies(rd, {10000.0});
  const std::vector<std::int32_t> pos = {0, 3, 1, 40, 2};
  Vec x = randn(tokens * heads * hd, 13);
  const Vec c = randn(x.size(), 14);
  auto loss = [&] {
    Vec y = x;
    rope_forward(y.data(), pos.data(), tokens, heads, hd, rd, inv_freq.data(), 1.0f);
    return dot(c, y);
  };
  Vec dx = c;
  rope_backward(dx.data(), pos.data(), tokens, heads, hd, rd, inv_freq.data(), 1.0f);
  EXPECT_LT(finite_difference_rel_error(x, dx, loss), kMaxRel);
  Vec y = x;
  rope_forward(y.data(), pos.data(), tokens, heads, hd, rd, inv_freq.data(), 1.0f);
  for (int t = 0; t < tokens * heads; ++t) {
    for (int i = rd; i < hd; ++i) EXPECT_EQ(y[t * hd + i], x[t * hd + i]) << t << " " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

struct AttnShape {
  int B, T, H, KV, hd;
};

// Checks dq, dk, dv of attention for one shape and optional segment ids ([B*T]).
void check_attention_gradients(const AttnShape& s, const std::vector<std::int32_t>* segment,
                               std::uint64_t seed, int window = 0, double score_d = 0,
                               double softcap = 0) {
  const double scale = attention_scale<double>(score_d > 0 ? score_d : s.hd);
  const std::size_t nq = static_cast<std::size_t>(s.B) * s.T * s.H * s.hd;
  const std::size_t nkv = static_cast<std::size_t>(s.B) * s.T * s.KV * s.hd;
  Vec q = randn(nq, seed), k = randn(nkv, seed + 1), v = randn(nkv, seed + 2);
  const Vec c = randn(nq, seed + 3);
  Vec out(nq), probs(static_cast<std::size_t>(s.B) * s.H * s.T * s.T);
  const std::int32_t* seg = segment ? segment->data() : nullptr;

  auto loss = [&] {
    attention_forward(q.data(), k.data(), v.data(), seg, window, scale, softcap, out.data(),
                      probs.data(), s.B, s.T, s.H, s.KV, s.hd);
    return dot(c, out);
  };
  loss();  // probs for backward
  // Poison the outputs: backward must overwrite them, not accumulate into them.
  Vec dq(nq, 123.0), dk(nkv, -7.0), dv(nkv, 55.0);
  attention_backward(c.data(), q.data(), k.data(), v.data(), probs.data(), window, scale, softcap,
                     dq.data(), dk.data(), dv.data(), s.B, s.T, s.H, s.KV, s.hd);
  EXPECT_LT(finite_difference_rel_error(q, dq, loss), kMaxRel) << "dq";
  EXPECT_LT(finite_difference_rel_error(k, dk, loss), kMaxRel) << "dk";
  EXPECT_LT(finite_difference_rel_error(v, dv, loss), kMaxRel) << "dv";
}

TEST(AttentionGradcheck, GroupedQueryH4KV2) {
  check_attention_gradients({2, 6, 4, 2, 4}, nullptr, 100);
}

TEST(AttentionGradcheck, MultiHeadHEqualsKV) {
  check_attention_gradients({2, 5, 3, 3, 4}, nullptr, 200);
}

TEST(AttentionGradcheck, MultiQueryKV1) {
  check_attention_gradients({1, 5, 4, 1, 6}, nullptr, 300);
}

// Only the last `window` keys: the gradients of keys that fell out of a query's window are 0.
TEST(AttentionGradcheck, SlidingWindowWithAndWithoutDocuments) {
  const std::vector<std::int32_t> segment = {0, 0, 0, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5, 5};
  check_attention_gradients({2, 7, 4, 2, 4}, nullptr, 450, 3);
  check_attention_gradients({2, 7, 4, 2, 4}, &segment, 460, 2);
  // With Gemma 2 / 3's score scale (1 / sqrt(query_pre_attn_scalar)) as well.
  check_attention_gradients({2, 7, 4, 2, 4}, nullptr, 470, 3, 9.0);
}

// Gemma 2's soft-capped scores (cap * tanh(S / cap)); a cap of 1.5 against scores of about
// unit size keeps tanh well away from linear, so a missing cap derivative cannot pass.
TEST(AttentionGradcheck, SoftcappedScoresWithWindowAndDocuments) {
  const std::vector<std::int32_t> segment = {0, 0, 0, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5, 5};
  check_attention_gradients({2, 7, 4, 2, 4}, nullptr, 480, 0, 0, 1.5);
  check_attention_gradients({2, 7, 4, 2, 4}, &segment, 490, 3, 9.0, 1.5);
}

TEST(AttentionGradcheck, SegmentMaskTwoDocumentsInASequence) {
  // Sequence 0 packs two documents (3 + 4 tokens); sequence 1 is a single document.
  const std::vector<std::int32_t> segment = {0, 0, 0, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5, 5};
  check_attention_gradients({2, 7, 4, 2, 4}, &segment, 400);
}

TEST(AttentionGradcheck, LongSequenceAcrossCausalRowBlocks) {
  // T = 130 crosses the kernel's 64-row causal blocks twice (the last block is partial); one
  // document boundary sits inside a block and one on a block edge.
  const int T = 130;
  std::vector<std::int32_t> segment(T);
  for (int t = 0; t < T; ++t) segment[t] = t < 50 ? 0 : (t < 64 ? 1 : 2);
  check_attention_gradients({1, T, 2, 1, 2}, &segment, 500);
  // A sliding window shorter than a block: the later blocks skip the keys before it.
  check_attention_gradients({1, T, 2, 1, 2}, nullptr, 510, 20);
}

// ---------------------------------------------------------------------------------------------
// SwiGLU
// ---------------------------------------------------------------------------------------------

void check_glu_gradients(GluActivation act) {
  const std::size_t n = 64;
  Vec gate = randn(n, 21, 4.0);  // wide range: both tails of the sigmoid
  Vec up = randn(n, 22);
  const Vec c = randn(n, 23);
  Vec out(n);
  auto loss = [&] {
    glu_forward(act, gate.data(), up.data(), out.data(), n);
    return dot(c, out);
  };
  Vec dgate(n), dup(n);
  glu_backward(act, c.data(), gate.data(), up.data(), dgate.data(), dup.data(), n);
  EXPECT_LT(finite_difference_rel_error(gate, dgate, loss), kMaxRel) << "dgate";
  EXPECT_LT(finite_difference_rel_error(up, dup, loss), kMaxRel) << "dup";
}

TEST(SwiGluGradcheck, DgateAndDupMatchFiniteDifferences) {
  check_glu_gradients(GluActivation::kSilu);
}

TEST(GeGluGradcheck, DgateAndDupMatchFiniteDifferences) {
  check_glu_gradients(GluActivation::kGeluTanh);
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy (scalar output, so L = grad_scale * sum of row losses)
// ---------------------------------------------------------------------------------------------

TEST(CrossEntropyGradcheck, IgnoredRowsAndGradScale) {
  const int n = 6, V = 11;
  const double grad_scale = 0.37;
  Vec logits = randn(n * V, 31, 2.0);
  const std::vector<std::int32_t> targets = {3, kIgnoreIndex, 0, 10, kIgnoreIndex, 7};

  auto loss = [&] {
    return grad_scale * cross_entropy_forward_backward<double>(logits.data(), targets.data(),
                                                               nullptr, n, V, grad_scale, 0.0);
  };
  Vec dlogits(logits.size(), 9.0);  // poisoned: ignored rows must come back as exact zeros
  cross_entropy_forward_backward(logits.data(), targets.data(), dlogits.data(), n, V, grad_scale,
                                 0.0);
  EXPECT_LT(finite_difference_rel_error(logits, dlogits, loss), kMaxRel);
  for (int r : {1, 4}) {
    for (int j = 0; j < V; ++j) EXPECT_EQ(dlogits[r * V + j], 0.0) << "row " << r;
  }
}

// Gemma 2's final_logit_softcapping: the loss of cap * tanh(logits / cap), its gradient with
// respect to the uncapped logits, also in place (dlogits == logits) as the models call it.
TEST(CrossEntropyGradcheck, SoftcappedLogitsAlsoInPlace) {
  const int n = 5, V = 13;
  const double grad_scale = 0.29, cap = 2.5;  // logits of std 2: tanh far from linear
  Vec logits = randn(n * V, 37, 2.0);
  const std::vector<std::int32_t> targets = {4, 12, kIgnoreIndex, 0, 7};
  auto loss = [&] {
    return grad_scale * cross_entropy_forward_backward<double>(logits.data(), targets.data(),
                                                               nullptr, n, V, grad_scale, cap);
  };
  Vec dlogits(logits.size(), 9.0);
  const double sum = cross_entropy_forward_backward(logits.data(), targets.data(), dlogits.data(),
                                                    n, V, grad_scale, cap);
  EXPECT_LT(finite_difference_rel_error(logits, dlogits, loss), kMaxRel);
  // The loss is that of the capped logits, whatever the row's max.
  Vec capped = logits;
  for (double& x : capped) x = cap * std::tanh(x / cap);
  EXPECT_NEAR(sum,
              cross_entropy_forward_backward<double>(capped.data(), targets.data(), nullptr, n, V,
                                                     grad_scale, 0.0),
              1e-12 * std::abs(sum));
  Vec inplace = logits;
  EXPECT_EQ(cross_entropy_forward_backward(inplace.data(), targets.data(), inplace.data(), n, V,
                                           grad_scale, cap),
            sum);
  EXPECT_EQ(inplace, dlogits);
}

// ---------------------------------------------------------------------------------------------
// LoRA linear
// ---------------------------------------------------------------------------------------------

struct LoraFixture {
  int n = 5, in = 7, out = 6, r = 3;
  Vec x, W, bias, A, B, c, x_drop, xa, y;
  std::vector<std::uint8_t> keep;
  LoraLinearArgs<double> args;

  explicit LoraFixture(bool with_dropout) {
    x = randn(n * in, 41);
    W = randn(out * in, 42);
    bias = randn(out, 43);
    A = randn(r * in, 44);
    B = randn(out * r, 45);  // non-zero (PEFT initialises B = 0, which would hide dA bugs)
    c = randn(n * out, 46);
    x_drop.assign(x.size(), 0.0);
    xa.assign(static_cast<std::size_t>(n) * r, 0.0);
    y.assign(static_cast<std::size_t>(n) * out, 0.0);
    args.n = n;
    args.in = in;
    args.out = out;
    args.r = r;
    args.scale = 1.75;
    args.W = W.data();
    args.bias = bias.data();
    args.A = A.data();
    args.B = B.data();
    args.xa = xa.data();
    if (with_dropout) {
      std::mt19937_64 rng(47);
      std::bernoulli_distribution keep_dist(0.7);
      keep.resize(x.size());
      for (auto& k : keep) k = keep_dist(rng) ? 1 : 0;
      args.keep = keep.data();
      args.keep_scale = 1.0 / 0.7;
      args.x_drop = x_drop.data();
    }
  }

  double loss() {
    lora_linear_forward(args, x.data(), y.data());
    return dot(c, y);
  }
};

void check_lora_gradients(bool with_dropout) {
  LoraFixture f(with_dropout);
  auto loss = [&] { return f.loss(); };
  loss();  // saved x_drop / xa for backward

  // dA and dB start from non-zero values: backward must ADD its gradient to them.
  const Vec dA0 = randn(f.A.size(), 48), dB0 = randn(f.B.size(), 49);
  Vec dA = dA0, dB = dB0, dx(f.x.size(), 77.0), dxa(f.xa.size());
  lora_linear_backward(f.args, f.x.data(), f.c.data(), dx.data(), dA.data(), dB.data(), dxa.data());
  Vec gA(dA.size()), gB(dB.size());
  for (std::size_t i = 0; i < dA.size(); ++i) gA[i] = dA[i] - dA0[i];
  for (std::size_t i = 0; i < dB.size(); ++i) gB[i] = dB[i] - dB0[i];

  EXPECT_LT(finite_difference_rel_error(f.x, dx, loss), kMaxRel) << "dx";
  EXPECT_LT(finite_difference_rel_error(f.A, gA, loss), kMaxRel) << "dA";
  EXPECT_LT(finite_difference_rel_error(f.B, gB, loss), kMaxRel) << "dB";

  // A second backward (another micro-batch) adds the same gradient again; dx = nullptr is
  // allowed and must not change dA / dB.
  loss();
  lora_linear_backward<double>(f.args, f.x.data(), f.c.data(), nullptr, dA.data(), dB.data(),
                               dxa.data());
  for (std::size_t i = 0; i < dA.size(); ++i) EXPECT_NEAR(dA[i], dA0[i] + 2 * gA[i], 1e-12);
  for (std::size_t i = 0; i < dB.size(); ++i) EXPECT_NEAR(dB[i], dB0[i] + 2 * gB[i], 1e-12);
}

TEST(LoraLinearGradcheck, WithBiasNoDropout) {
  check_lora_gradients(false);
}

TEST(LoraLinearGradcheck, WithBiasAndDropoutMask) {
  check_lora_gradients(true);
}

}  // namespace
}  // namespace peftrun::cpu
