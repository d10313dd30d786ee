// The CPU backend's own threads (kernels/parallel.h): every index runs exactly once, and the ops
// split over them give the serial result bit for bit whatever the thread count.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cross_entropy.h"
#include "kernels/parallel.h"
#include "kernels/swiglu.h"

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
                                                       n, V, 1.0f / 30.0f);
    out->assign(gate.size(), 0.0f);
    dg->assign(gate.size(), 0.0f);
    du->assign(gate.size(), 0.0f);
    swiglu_forward(gate.data(), up.data(), out->data(), gate.size());
    swiglu_backward(dout.data(), gate.data(), up.data(), dg->data(), du->data(), gate.size());
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

}  // namespace
}  // namespace peftrun::cpu
