// The CPU backend's own threads (kernels/parallel.h): every index runs exactly once, and the ops
// split over them give the serial result bit for bit whatever the thread count.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/dora.h"
#include "kernels/elementwise.h"
#include "kernels/glu.h"
#include "kernels/half.h"
#include "kernels/parallel.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rope_frequencies.h"

namespace peftrun::cpu {
namespace {

// Restores one thread after each test: other tests in this process expect the default.
class KernelThreads : public ::testing::Test {
 protected:
  void TearDown() override { set_kernel_threads(1); }
};

TEST_F(KernelThreads, EveryIndexRunsOnceInContiguousParts) {
  for (int threads : {1, 2, 3, 7}) {
    set_kernel_threads(threads);
    EXPECT_EQ(kernel_threads(), threads);
    for (std::size_t n : {std::size_t(1), std::size_t(5), std::size_t(1000), std::size_t(100003)}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> calls{0};
      parallel_for(n, 16, [&](std::size_t b, std::size_t e) {
        ASSERT_LT(b, e);
        ++calls;
        for (std::size_t i = b; i < e; ++i) ++hits[i];
      });
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << i;
      // Parts of at least min_part (16), at most one per thread.
      EXPECT_LE(calls.load(), std::max<int>(1, std::min<int>(threads, int(n / 16))));
    }
  }
}

TEST_F(KernelThreads, NestedCallRunsInline) {
  set_kernel_threads(2);
  std::atomic<int> inner{0};
  parallel_for(64, 1, [&](std::size_t, std::size_t) {
    parallel_for(10, 1, [&](std::size_t b, std::size_t e) { inner += int(e - b); });
  });
  EXPECT_EQ(inner.load(), 20);  // both outer parts ran the whole inner loop
}

TEST_F(KernelThreads, ForkedChildRunsInline) {
  set_kernel_threads(2);
  parallel_for(100, 1, [](std::size_t, std::size_t) {});  // workers exist now
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int sum = 0;
    parallel_for(100, 1, [&](std::size_t b, std::size_t e) { sum += int(e - b); });
    _exit(sum == 100 && kernel_threads() == 1 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(KernelThreads, CrossEntropyAndSwiGluAreBitIdenticalAcrossThreadCounts) {
  const int n = 37, V = 5000;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(std::size_t(n) * V), gate(300000), up(300000), dout(300000);
  for (auto& x : logits) x = normal(rng);
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = normal(rng), up[i] = normal(rng);
  for (auto& x : dout) x = normal(rng);
  std::vector<std::int32_t> targets(n);
  for (int r = 0; r < n; ++r) targets[r] = r % 5 == 3 ? kIgnoreIndex : (r * 131) % V;

  auto run = [&](int threads, std::vector<float>* grad, std::vector<float>* out,
                 std::vector<float>* dg, std::vector<float>* du) {
    set_kernel_threads(threads);
    grad->assign(logits.size(), 0.0f);
    const double loss = cross_entropy_forward_backward(logits.data(), targets.data(), grad->data(),
                                                       n, V, 1.0f / 30.0f, 0.0f);
    out->assign(gate.size(), 0.0f);
    dg->assign(gate.size(), 0.0f);
    du->assign(gate.size(), 0.0f);
    glu_forward(GluActivation::kSilu, gate.data(), up.data(), out->data(), gate.size());
    glu_backward(GluActivation::kSilu, dout.data(), gate.data(), up.data(), dg->data(), du->data(),
                 gate.size());
    return loss;
  };
  std::vector<float> g1, o1, dg1, du1, g2, o2, dg2, du2;
  const double loss1 = run(1, &g1, &o1, &dg1, &du1);
  for (int threads : {2, 3}) {
    const double loss2 = run(threads, &g2, &o2, &dg2, &du2);
    EXPECT_EQ(loss1, loss2) << threads;  // exact: per-row losses summed in row order
    EXPECT_EQ(g1, g2) << threads;
    EXPECT_EQ(o1, o2) << threads;
    EXPECT_EQ(dg1, dg2) << threads;
    EXPECT_EQ(du1, du2) << threads;
  }
}

std::vector<float> random_vector(std::size_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// Causal attention with packed documents, T neither a multiple of the 64-row block nor even,
// GQA: enough rows that 2 and 3 threads each get a part.
TEST_F(KernelThreads, AttentionIsBitIdenticalAcrossThreadCounts) {
  const int B = 2, T = 301, H = 6, KV = 2, hd = 8;
  std::mt19937 rng(11);
  const std::size_t nq = std::size_t(B) * T * H * hd, nkv = std::size_t(B) * T * KV * hd;
  const auto q = random_vector(nq, rng), k = random_vector(nkv, rng), v = random_vector(nkv, rng);
  const auto dout = random_vector(nq, rng);
  std::vector<std::int32_t> seg(std::size_t(B) * T);
  for (int t = 0; t < T; ++t) seg[t] = 0, seg[T + t] = t < 120 ? 0 : (t < 250 ? 1 : 2);
  struct Out {
    std::vector<float> o, probs, dq, dk, dv;
  };
  auto run = [&](int threads) {
    set_kernel_threads(threads);
    Out r{std::vector<float>(nq), std::vector<float>(std::size_t(B) * H * T * T),
          std::vector<float>(nq), std::vector<float>(nkv), std::vector<float>(nkv)};
    attention_forward(q.data(), k.data(), v.data(), seg.data(), 0, attention_scale<float>(hd), 0.0f,
                      r.o.data(), r.probs.data(), B, T, H, KV, hd);
    attention_backward(dout.data(), q.data(), k.data(), v.data(), r.probs.data(), 0,
                       attention_scale<float>(hd), 0.0f, r.dq.data(), r.dk.data(), r.dv.data(), B,
                       T, H, KV, hd);
    return r;
  };
  const Out one = run(1);
  for (int threads : {2, 3}) {
    const Out r = run(threads);
    EXPECT_EQ(one.o, r.o) << threads;
    EXPECT_EQ(one.probs, r.probs) << threads;
    EXPECT_EQ(one.dq, r.dq) << threads;
    EXPECT_EQ(one.dk, r.dk) << threads;
    EXPECT_EQ(one.dv, r.dv) << threads;
  }
}

TEST_F(KernelThreads, AdamWAndHalfStagingAreBitIdenticalAcrossThreadCounts) {
  const std::size_t n = 300007;  // several parts, and a remainder for the vector conversions
  std::mt19937 rng(12);
  const auto p0 = random_vector(n, rng), g = random_vector(n, rng), m0 = random_vector(n, rng);
  auto v0 = random_vector(n, rng);
  for (float& x : v0) x = x * x;  // second moments are >= 0
  std::vector<half_bits> h(n);
  for (std::size_t i = 0; i < n; ++i) h[i] = static_cast<half_bits>(rng());  // every pattern kind
  AdamWHyper hyper;
  hyper.lr = 1e-2;
  hyper.weight_decay = 0.1;
  hyper.step = 3;
  struct Out {
    std::vector<float> p, m, v, w;
  };
  auto run = [&](int threads) {
    set_kernel_threads(threads);
    Out r{p0, m0, v0, std::vector<float>(n)};
    adamw_step(r.p.data(), g.data(), r.m.data(), r.v.data(), n, hyper);
    half_to_real(h.data(), r.w.data(), n);
    return r;
  };
  const Out one = run(1);
  for (std::size_t i = 0; i < n; ++i) {
    // The staging is the scalar conversion, NaNs aside (their payload bits are not compared).
    if (!std::isnan(one.w[i])) {
      ASSERT_EQ(one.w[i], half_to_float(h[i])) << i;
    }
  }
  for (int threads : {2, 3}) {
    const Out r = run(threads);
    EXPECT_EQ(0, std::memcmp(one.p.data(), r.p.data(), n * sizeof(float))) << threads;
    EXPECT_EQ(0, std::memcmp(one.m.data(), r.m.data(), n * sizeof(float))) << threads;
    EXPECT_EQ(0, std::memcmp(one.v.data(), r.v.data(), n * sizeof(float))) << threads;
    EXPECT_EQ(0, std::memcmp(one.w.data(), r.w.data(), n * sizeof(float))) << threads;
  }
}

TEST_F(KernelThreads, RmsNormRopeAndResidualAddAreBitIdenticalAcrossThreadCounts) {
  const int rows = 211, dim = 300;
  const std::size_t n = std::size_t(rows) * dim;
  std::mt19937 rng(12);
  const auto x = random_vector(n, rng), w = random_vector(dim, rng), dy = random_vector(n, rng);
  auto run = [&](int threads) {
    set_kernel_threads(threads);
    std::vector<float> y(n), rstd(rows), dx(n);
    rmsnorm_forward(x.data(), w.data(), 0.0f, y.data(), rstd.data(), rows, dim, 1e-5f);
    rmsnorm_backward(dy.data(), x.data(), w.data(), 0.0f, rstd.data(), dx.data(), rows, dim);
    add_inplace(dx.data(), x.data(), n);
    std::vector<std::int32_t> pos(rows);
    for (int t = 0; t < rows; ++t) pos[t] = (t * 37) % 500;
    const std::vector<float> inv_freq = rope_inverse_frequencies(60, {10000.0});
    rope_forward(y.data(), pos.data(), rows, 5, 60, 60, inv_freq.data(),
                 1.0f);  // 5 heads x 60 = dim
    rope_backward(dx.data(), pos.data(), rows, 5, 60, 60, inv_freq.data(), 1.0f);
    y.insert(y.end(), rstd.begin(), rstd.end());
    y.insert(y.end(), dx.begin(), dx.end());
    return y;
  };
  const auto one = run(1);
  for (int threads : {2, 3}) EXPECT_EQ(one, run(threads)) << threads;
}

// DoRA's [n, out] passes (split over columns, dm's column sums included) and dropout's [n, in]
// masks, with a bias, with and without dropout.
TEST_F(KernelThreads, DoraIsBitIdenticalAcrossThreadCounts) {
  const int n = 64, in = 800, out = 1000, r = 4;
  std::mt19937 rng(13);
  const auto x = random_vector(std::size_t(n) * in, rng),
             dy = random_vector(std::size_t(n) * out, rng);
  const auto W = random_vector(std::size_t(out) * in, rng, 0.05f), bias = random_vector(out, rng);
  const auto A = random_vector(std::size_t(r) * in, rng, 0.1f);
  const auto B = random_vector(std::size_t(out) * r, rng, 0.1f);
  std::vector<float> m = random_vector(out, rng), norm(out);
  for (int j = 0; j < out; ++j) norm[j] = 1.0f + 0.01f * float(j % 7), m[j] = 1.0f + 0.1f * m[j];
  std::vector<std::uint8_t> keep(std::size_t(n) * in);
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = (i * 2654435761u) % 10 < 8;
  for (bool dropout : {false, true}) {
    auto run = [&](int threads) {
      set_kernel_threads(threads);
      std::vector<float> x_drop(std::size_t(n) * in), xa(std::size_t(n) * r),
          z(std::size_t(n) * out), work(dora_linear_workspace(n, out, r)), y(std::size_t(n) * out),
          dx(std::size_t(n) * in), dA(std::size_t(r) * in), dB(std::size_t(out) * r), dm(out);
      LoraLinearArgs<float> l;
      l.n = n, l.in = in, l.out = out, l.r = r, l.scale = 2.0f;
      l.W = W.data(), l.bias = bias.data(), l.A = A.data(), l.B = B.data();
      l.keep = dropout ? keep.data() : nullptr, l.keep_scale = 1.25f;
      l.x_drop = x_drop.data(), l.xa = xa.data();
      const DoraLinearArgs<float> d{l, m.data(), norm.data(), z.data(), work.data()};
      dora_linear_forward(d, x.data(), y.data());
      dora_linear_backward(d, x.data(), dy.data(), dx.data(), dA.data(), dB.data(), dm.data());
      for (const auto* v : {&z, &dx, &dA, &dB, &dm}) y.insert(y.end(), v->begin(), v->end());
      return y;
    };
    const auto one = run(1);
    for (int threads : {2, 3}) EXPECT_EQ(one, run(threads)) << threads << " dropout " << dropout;
  }
}

}  // namespace
}  // namespace peftrun::cpu
