// OpenBLAS's threads as peftrun sets them up (kernels/gemm.h): the thread count, the scope that
// runs each GEMM on one thread, and the short idle spin set at the first set_blas_threads.
#include <cblas.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/gemm.h"

namespace peftrun::cpu {
namespace {

// C = A B^T for A [M, K], B [N, K] in double, the reference for the float GEMMs below.
std::vector<double> reference(const std::vector<float>& A, const std::vector<float>& B, int M,
                              int N, int K) {
  std::vector<double> C(std::size_t(M) * N);
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k)
        s += double(A[std::size_t(i) * K + k]) * B[std::size_t(j) * K + k];
      C[std::size_t(i) * N + j] = s;
    }
  }
  return C;
}

std::vector<float> product(const std::vector<float>& A, const std::vector<float>& B, int M, int N,
                           int K) {
  std::vector<float> C(std::size_t(M) * N, -1.0f);
  gemm(Trans::kNo, Trans::kYes, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N);
  return C;
}

TEST(BlasThreads, IdleThreadsSleepAtOnceAndStillCompute) {
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr) {
    // The user's own value is kept, so there is nothing of ours to check.
    GTEST_SKIP() << "OPENBLAS_THREAD_TIMEOUT is set in the environment";
  }
  const int M = 300, N = 200, K = 150;  // large enough for OpenBLAS to use both threads
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> A(std::size_t(M) * K), B(std::size_t(N) * K);
  for (auto& x : A) x = nd(rng);
  for (auto& x : B) x = nd(rng);
  set_blas_threads(2);  // restarts OpenBLAS's threads with the short timeout
  EXPECT_NE(blas_description().find("idle threads sleep at once"), std::string::npos)
      << blas_description();
  EXPECT_STREQ(std::getenv("OPENBLAS_THREAD_TIMEOUT"), "4");
  const std::vector<float> after = product(A, B, M, N, K);
  const std::vector<double> ref = reference(A, B, M, N, K);
  for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(after[i], ref[i], 1e-3) << i;
}

// (Not bit for bit against the threaded product: how OpenBLAS splits a GEMM over threads decides
// which of its kernels, full tile or edge, computes an element, and those may round differently.)
TEST(BlasThreads, SingleThreadedScopeRestoresTheCount) {
  set_blas_threads(2);
  const int M = 256, N = 192, K = 64;
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  std::vector<float> A(std::size_t(M) * K), B(std::size_t(N) * K);
  for (auto& x : A) x = nd(rng);
  for (auto& x : B) x = nd(rng);
  const std::vector<double> ref = reference(A, B, M, N, K);
  {
    const SingleThreadedBlas scope;
    EXPECT_EQ(openblas_get_num_threads(), 1);
    const std::vector<float> one = product(A, B, M, N, K);
    for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(one[i], ref[i], 1e-3) << i;
  }
  EXPECT_EQ(openblas_get_num_threads(), 2);
}

}  // namespace
}  // namespace peftrun::cpu
