// The host-side half of the cuBLASLt GEMM (kernels/gemm_plan.h), checked without a GPU: the
// row-major -> column-major mapping is executed here by a naive column-major GEMM with
// cuBLASLt's semantics (per-row alpha vector and bias of D) and must equal the row-major
// contract; the plan key sees every field the heuristic depends on; the cache returns the same
// plan for the same key and queries once per key.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/gemm_plan.h"
#include "kernels/workspace.h"

namespace peftrun::cuda {
namespace {

using Vec = std::vector<double>;

Vec random_vec(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  Vec v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// What cublasLtMatmul computes, column-major: D[i + j ldd] = a_i sum_k opX(i, k) opY(k, j)
// + beta C[i + j ldd] + bias[i], with a_i the alpha vector's entry for ROW i of D (or alpha).
void lt_reference(const LtProblem& p, double alpha, const double* alpha_vec, double beta,
                  const double* bias, const Vec& X, const Vec& Y, const Vec& C, Vec& D) {
  for (std::uint64_t j = 0; j < p.n; ++j) {
    for (std::uint64_t i = 0; i < p.m; ++i) {
      double s = 0.0;
      for (std::uint64_t k = 0; k < p.k; ++k) {
        const double x = p.x.transposed ? X[k + i * p.x.ld] : X[i + k * p.x.ld];
        const double y = p.y.transposed ? Y[j + k * p.y.ld] : Y[k + j * p.y.ld];
        s += x * y;
      }
      const std::size_t at = i + j * static_cast<std::uint64_t>(p.ldd);
      double d = (alpha_vec ? alpha_vec[i] : alpha) * s;
      if (beta != 0.0) d += beta * C[at];
      if (bias) d += bias[i];
      D[at] = d;
    }
  }
}

// The row-major contract of cuda::gemm (gemm.h), written directly.
void row_major_reference(bool ta, bool tb, int M, int N, int K, double alpha,
                         const double* alpha_vec, const Vec& A, int lda, const Vec& B, int ldb,
                         double beta, const Vec& C, const double* bias, Vec& D, int ldd) {
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) {
        const double a = ta ? A[k * lda + i] : A[i * lda + k];
        const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
        s += a * b;
      }
      double d = (alpha_vec ? alpha_vec[j] : alpha) * s;
      if (beta != 0.0) d += beta * C[i * ldd + j];
      if (bias) d += bias[j];
      D[i * ldd + j] = d;
    }
  }
}

TEST(GemmPlan, ColumnMajorMappingComputesTheRowMajorProduct) {
  const int M = 7, N = 5, K = 6;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (bool with_extras : {false, true}) {
        const int a_rows = ta ? K : M, lda = (ta ? M : K) + 3;
        const int b_rows = tb ? N : K, ldb = (tb ? K : N) + 2;
        const int ldd = N + 4;
        const Vec A = random_vec(static_cast<std::size_t>(a_rows) * lda, 1);
        const Vec B = random_vec(static_cast<std::size_t>(b_rows) * ldb, 2);
        const Vec C = random_vec(static_cast<std::size_t>(M) * ldd, 3);
        const Vec alpha_vec = random_vec(N, 4), bias = random_vec(N, 5);
        const double* av = with_extras ? alpha_vec.data() : nullptr;
        const double* bv = with_extras ? bias.data() : nullptr;
        const double beta = with_extras ? -0.5 : 0.0;

        GemmArgs g;
        g.trans_a = ta ? Trans::kYes : Trans::kNo;
        g.trans_b = tb ? Trans::kYes : Trans::kNo;
        g.M = M;
        g.N = N;
        g.K = K;
        g.A = A.data();
        g.lda = lda;
        g.B = B.data();
        g.ldb = ldb;
        g.D = reinterpret_cast<void*>(0x1000);
        g.ldd = ldd;
        g.d_type = g.ab_type;
        g.beta = static_cast<float>(beta);
        validate_gemm(g);
        const LtProblem p = map_to_column_major(g);
        // The operands are the row-major buffers themselves: nothing is copied or transposed.
        EXPECT_EQ(p.x.data, B.data());
        EXPECT_EQ(p.y.data, A.data());
        EXPECT_EQ(p.m, std::uint64_t(N));
        EXPECT_EQ(p.n, std::uint64_t(M));
        EXPECT_GE(p.x.ld, std::int64_t(p.x.rows));
        EXPECT_GE(p.y.ld, std::int64_t(p.y.rows));

        Vec got(C.size(), 0.0), want(C.size(), 0.0);
        lt_reference(p, 0.75, av, beta, bv, B, A, C, got);
        row_major_reference(ta, tb, M, N, K, 0.75, av, A, lda, B, ldb, beta, C, bv, want, ldd);
        for (std::size_t i = 0; i < got.size(); ++i) {
          EXPECT_NEAR(got[i], want[i], 1e-12) << "ta=" << ta << " tb=" << tb << " at " << i;
        }
      }
    }
  }
}

TEST(GemmPlan, PointerModeFollowsAlphaVectorAndBeta) {
  GemmArgs g;
  g.M = g.N = g.K = 4;
  g.A = g.B = reinterpret_cast<const void*>(0x100);
  g.D = reinterpret_cast<void*>(0x200);
  g.lda = g.ldb = g.ldd = 4;
  EXPECT_EQ(map_to_column_major(g).pointer_mode, PointerMode::kHost);
  const float vec = 1.0f;
  g.alpha_vec = &vec;
  EXPECT_EQ(map_to_column_major(g).pointer_mode, PointerMode::kAlphaVectorBetaZero);
  g.beta = 1.0f;
  EXPECT_EQ(map_to_column_major(g).pointer_mode, PointerMode::kAlphaVectorBetaHost);
  EXPECT_FALSE(map_to_column_major(g).bias);
  g.bias = &vec;
  EXPECT_TRUE(map_to_column_major(g).bias);
}

GemmArgs valid_args() {
  GemmArgs g;
  g.trans_b = Trans::kYes;  // x W^T: A [M, K], B [N, K]
  g.M = 8;
  g.N = 16;
  g.K = 32;
  g.A = reinterpret_cast<const void*>(0x10000);
  g.lda = 32;
  g.B = reinterpret_cast<const void*>(0x20000);
  g.ldb = 32;
  g.D = reinterpret_cast<void*>(0x30000);
  g.ldd = 16;
  return g;
}

void expect_invalid(const GemmArgs& g, const std::string& fragment) {
  try {
    validate_gemm(g);
    FAIL() << "accepted; expected an error mentioning " << fragment;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(GemmPlan, ValidationNamesTheProblem) {
  EXPECT_NO_THROW(validate_gemm(valid_args()));
  GemmArgs g = valid_args();
  g.ldb = 31;
  expect_invalid(g, "ldb = 31");
  g = valid_args();
  g.lda = 7;
  expect_invalid(g, "lda = 7");
  g = valid_args();
  g.ldd = 15;
  expect_invalid(g, "ldd = 15");
  g = valid_args();
  g.ab_type = DType::kF16;
  g.d_type = DType::kBF16;
  expect_invalid(g, "output type bf16 with fp16 inputs");
  g = valid_args();
  g.A = nullptr;
  expect_invalid(g, "A or B is null");
  g = valid_args();
  g.K = -1;
  expect_invalid(g, "negative");
  // Empty products need no operands.
  g = valid_args();
  g.K = 0;
  g.A = g.B = nullptr;
  EXPECT_NO_THROW(validate_gemm(g));
}

TEST(GemmPlan, PointerAlignmentIsTheLargestPowerOfTwoUpTo256) {
  EXPECT_EQ(pointer_alignment(nullptr), 256u);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(0x1000)), 256u);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(0x1002)), 2u);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(0x1010)), 16u);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(0x1080)), 128u);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(0x1001)), 1u);
}

TEST(GemmPlan, KeySeesEveryFieldTheHeuristicDependsOn) {
  const GemmArgs base = valid_args();
  const GemmKey k0 = make_gemm_key(base, 1 << 20);
  EXPECT_EQ(k0, make_gemm_key(base, 1 << 20));
  EXPECT_EQ(GemmKeyHash{}(k0), GemmKeyHash{}(make_gemm_key(base, 1 << 20)));
  // Only the pointers' alignment matters, not the addresses themselves.
  GemmArgs moved = base;
  moved.A = reinterpret_cast<const void*>(0x50000);
  moved.D = reinterpret_cast<void*>(0x70000);
  EXPECT_EQ(make_gemm_key(moved, 1 << 20), k0);
  // Scalars are passed per call and are not part of the plan (except beta's zero-ness when an
  // alpha vector selects the pointer mode).
  moved.alpha = 3.0f;
  moved.beta = 1.0f;
  EXPECT_EQ(make_gemm_key(moved, 1 << 20), k0);

  const float vec = 1.0f;
  std::vector<GemmArgs> variants;
  auto variant = [&](auto change) {
    GemmArgs g = base;
    change(g);
    variants.push_back(g);
  };
  variant([](GemmArgs& g) { g.M = 9; });
  variant([](GemmArgs& g) { g.N = 17; });
  variant([](GemmArgs& g) { g.K = 33; });
  variant([](GemmArgs& g) { g.lda = 40; });
  variant([](GemmArgs& g) { g.ldb = 40; });
  variant([](GemmArgs& g) { g.ldd = 20; });
  variant([](GemmArgs& g) {
    g.trans_a = Trans::kYes;
    g.lda = 8;
  });
  variant([](GemmArgs& g) {
    g.trans_b = Trans::kNo;
    g.ldb = 16;
  });
  variant([](GemmArgs& g) {
    g.ab_type = DType::kBF16;
    g.d_type = DType::kBF16;
  });
  variant([](GemmArgs& g) { g.d_type = DType::kF32; });
  variant([&](GemmArgs& g) { g.alpha_vec = &vec; });
  variant([&](GemmArgs& g) {
    g.alpha_vec = &vec;
    g.beta = 1.0f;
  });
  variant([&](GemmArgs& g) { g.bias = &vec; });
  variant([](GemmArgs& g) { g.A = reinterpret_cast<const void*>(0x10002); });
  variant([](GemmArgs& g) { g.B = reinterpret_cast<const void*>(0x20008); });
  variant([](GemmArgs& g) { g.D = reinterpret_cast<void*>(0x30004); });
  variant([](GemmArgs& g) {
    g.beta = 1.0f;
    g.C = reinterpret_cast<const void*>(0x40002);
  });
  std::vector<GemmKey> keys{k0};
  for (const GemmArgs& g : variants) keys.push_back(make_gemm_key(g, 1 << 20));
  keys.push_back(make_gemm_key(base, 0));  // the workspace limit changes the algorithms offered
  for (std::size_t i = 0; i < keys.size(); ++i) {
    for (std::size_t j = i + 1; j < keys.size(); ++j) {
      EXPECT_NE(keys[i], keys[j]) << "variants " << i << " and " << j << " share a key";
    }
  }
  EXPECT_NE(describe(keys[9]).find("bf16 x bf16"), std::string::npos) << describe(keys[9]);
  EXPECT_NE(describe(keys[11]).find("alpha vector"), std::string::npos);
}

TEST(GemmPlan, CacheReturnsTheSamePlanForTheSameKeyAndQueriesOnce) {
  PlanCache<int> cache;
  int queries = 0;
  auto query = [&queries] { return 100 + queries++; };
  const GemmKey a = make_gemm_key(valid_args(), 0);
  GemmArgs other = valid_args();
  other.N = 24;
  const GemmKey b = make_gemm_key(other, 0);

  int& first = cache.get_or_create(a, query);
  EXPECT_EQ(first, 100);
  int& again = cache.get_or_create(a, query);
  EXPECT_EQ(&again, &first);  // the very same entry: the heuristic's algorithm is reused
  EXPECT_EQ(again, 100);
  EXPECT_EQ(queries, 1);
  EXPECT_EQ(cache.get_or_create(b, query), 101);
  EXPECT_EQ(queries, 2);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.created(), 2u);
  ASSERT_NE(cache.find(a), nullptr);
  EXPECT_EQ(*cache.find(a), 100);

  // A failing query leaves nothing behind, so the next call asks again.
  GemmArgs third = valid_args();
  third.K = 64;
  const GemmKey c = make_gemm_key(third, 0);
  EXPECT_THROW(cache.get_or_create(c, []() -> int { throw std::runtime_error("no algo"); }),
               std::runtime_error);
  EXPECT_EQ(cache.find(c), nullptr);
  EXPECT_EQ(cache.get_or_create(c, query), 102);
}

TEST(WorkspaceCarver, MeasuringAndCarvingAgreeAndAlign) {
  auto carve = [](WorkspaceCarver& w, float** f, double** d, unsigned char** b) {
    *f = w.take<float>(3);
    *b = w.take<unsigned char>(0);  // nothing asked: nullptr, no space
    *d = w.take<double>(100);
  };
  WorkspaceCarver measure;
  float* f = nullptr;
  double* d = nullptr;
  unsigned char* b = nullptr;
  carve(measure, &f, &d, &b);
  EXPECT_EQ(f, nullptr);
  EXPECT_EQ(measure.bytes(), 256u + 1024u);  // 12 B padded to 256, then 800 B padded to 1024

  alignas(256) static unsigned char buffer[4096];
  WorkspaceCarver real(buffer);
  carve(real, &f, &d, &b);
  EXPECT_EQ(reinterpret_cast<unsigned char*>(f), buffer);
  EXPECT_EQ(b, nullptr);
  EXPECT_EQ(reinterpret_cast<unsigned char*>(d), buffer + 256);
  EXPECT_EQ(real.bytes(), measure.bytes());

  // Forks overlap: both start where the parent stopped.
  WorkspaceCarver one = real.fork(), two = real.fork();
  EXPECT_EQ(one.take<float>(1), two.take<float>(1));
}

}  // namespace
}  // namespace peftrun::cuda
