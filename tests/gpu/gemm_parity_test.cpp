// cuda::gemm (cuBLASLt) against a double-precision row-major reference on the same rounded
// inputs: every transpose pair, odd shapes and padded strides, fp32 / fp16 / bf16 inputs with
// same-type or fp32 outputs, the bias epilogue, the alpha vector, beta accumulation into a
// distinct C, K = 0, and the plan cache. GpuGemmHelperParity runs the cases of
// gemm_helper_cases.h (K = 0 and scale_columns on padded strides), which
// tests/emulated_adapter_kernels_test.cpp also runs in the CPU block emulator.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "tests/gpu/adapter_parity_support.h"
#include "tests/gpu/gemm_helper_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

struct Problem {
  bool ta = false, tb = false;
  int M = 0, N = 0, K = 0;
  int pad = 0;  // extra elements per stored row, so strides exceed widths
  DType ab = DType::kF32, d = DType::kF32;
  float alpha = 1.0f, beta = 0.0f;
  bool alpha_vec = false, bias = false, separate_c = false;
};

// D = a_j op(A) op(B) + beta C + bias, in double, on the values the device holds.
std::vector<double> reference(const Problem& p, const std::vector<float>& A, int lda,
                              const std::vector<float>& B, int ldb, const std::vector<float>& C,
                              int ldd, const std::vector<float>& avec,
                              const std::vector<float>& bias) {
  std::vector<double> D(static_cast<std::size_t>(p.M) * ldd, 0.0);
  for (int i = 0; i < p.M; ++i) {
    for (int j = 0; j < p.N; ++j) {
      double s = 0.0;
      for (int k = 0; k < p.K; ++k) {
        const double a = p.ta ? A[std::size_t(k) * lda + i] : A[std::size_t(i) * lda + k];
        const double b = p.tb ? B[std::size_t(j) * ldb + k] : B[std::size_t(k) * ldb + j];
        s += a * b;
      }
      double v = (p.alpha_vec ? avec[j] : p.alpha) * s;
      if (p.beta != 0.0f) v += double(p.beta) * C[std::size_t(i) * ldd + j];
      if (p.bias) v += bias[j];
      D[std::size_t(i) * ldd + j] = v;
    }
  }
  return D;
}

// Only the [M, N] block of a strided matrix (padding is neither compared nor written).
std::vector<double> block(const std::vector<double>& m, int rows, int cols, int ld) {
  std::vector<double> b;
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) b.push_back(m[std::size_t(i) * ld + j]);
  }
  return b;
}
std::vector<double> block(const std::vector<float>& m, int rows, int cols, int ld) {
  return block(to_double(m), rows, cols, ld);
}

class GpuGemmParity : public BlasLtTest {
 protected:
  // Runs p on the device and returns ||D - ref|| / ||ref|| over the [M, N] block; also checks
  // the padding columns of D were left alone.
  double run(const Problem& p, std::uint64_t seed) {
    const int a_rows = p.ta ? p.K : p.M, a_cols = p.ta ? p.M : p.K;
    const int b_rows = p.tb ? p.N : p.K, b_cols = p.tb ? p.K : p.N;
    const int lda = a_cols + p.pad, ldb = b_cols + p.pad, ldd = p.N + p.pad;
    const std::vector<float> A =
        round_to(random_floats(std::size_t(a_rows) * lda, seed, 1.0f), p.ab);
    const std::vector<float> B =
        round_to(random_floats(std::size_t(b_rows) * ldb, seed + 1, 1.0f), p.ab);
    // Padding columns hold 7 (in C and D, which share the layout) and must still hold it after.
    std::vector<float> C = round_to(random_floats(std::size_t(p.M) * ldd, seed + 2), p.d);
    for (int i = 0; i < p.M; ++i) {
      for (int j = p.N; j < ldd; ++j) C[std::size_t(i) * ldd + j] = 7.0f;
    }
    const std::vector<float> avec = random_floats(p.N, seed + 3);
    const std::vector<float> bias = round_to(random_floats(p.N, seed + 4), p.d);

    DeviceTensor dA = upload_as(A, p.ab), dB = upload_as(B, p.ab);
    DeviceTensor dC = upload_as(C, p.d);
    // D starts as C when it accumulates in place; otherwise its [M, N] block is NaN (poison).
    std::vector<float> d_init = C;
    if (p.beta == 0.0f || p.separate_c) {
      for (int i = 0; i < p.M; ++i) {
        for (int j = 0; j < p.N; ++j) d_init[std::size_t(i) * ldd + j] = NAN;
      }
    }
    DeviceTensor dD = upload_as(d_init, p.d);
    cuda::DeviceBuffer<float> d_avec = to_device(avec);
    DeviceTensor d_bias = upload_as(bias, p.d);

    cuda::GemmArgs g;
    g.trans_a = p.ta ? Trans::kYes : Trans::kNo;
    g.trans_b = p.tb ? Trans::kYes : Trans::kNo;
    g.M = p.M;
    g.N = p.N;
    g.K = p.K;
    g.A = dA.data();
    g.lda = lda;
    g.B = dB.data();
    g.ldb = ldb;
    g.ab_type = p.ab;
    g.D = dD.data();
    g.ldd = ldd;
    g.d_type = p.d;
    g.C = p.separate_c ? dC.data() : nullptr;
    g.alpha = p.alpha;
    g.alpha_vec = p.alpha_vec ? d_avec.data() : nullptr;
    g.beta = p.beta;
    g.bias = p.bias ? d_bias.data() : nullptr;
    cuda::gemm(lt(), g, nullptr);
    const std::vector<float> D = download(dD);
    for (int i = 0; i < p.M; ++i) {
      for (int j = p.N; j < ldd; ++j) {
        EXPECT_EQ(D[std::size_t(i) * ldd + j], 7.0f) << "padding overwritten at row " << i;
      }
    }
    const std::vector<double> ref = reference(p, A, lda, B, ldb, C, ldd, avec, bias);
    return rel_error(block(D, p.M, p.N, ldd), block(ref, p.M, p.N, ldd));
  }
};

TEST_F(GpuGemmParity, Fp32EveryTransposeOddShapesPaddedStrides) {
  const int shapes[][3] = {{1, 1, 1}, {7, 33, 127}, {127, 7, 33}, {33, 127, 7}, {64, 128, 64}};
  std::uint64_t seed = 10;
  for (const auto& s : shapes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        Problem p;
        p.ta = ta;
        p.tb = tb;
        p.M = s[0];
        p.N = s[1];
        p.K = s[2];
        p.pad = 3;
        p.alpha = 0.7f;
        p.beta = -0.3f;
        EXPECT_LT(run(p, seed += 5), kTolFp32)
            << "M=" << p.M << " N=" << p.N << " K=" << p.K << " ta=" << ta << " tb=" << tb;
      }
    }
  }
}

TEST_F(GpuGemmParity, SixteenBitInputsWithSameTypeOrFp32Output) {
  std::uint64_t seed = 100;
  for (DType ab : {DType::kF16, DType::kBF16}) {
    for (DType d : {ab, DType::kF32}) {
      for (bool tb : {false, true}) {
        Problem p;
        p.tb = tb;
        p.M = 33;
        p.N = 127;
        p.K = 65;
        p.ab = ab;
        p.d = d;
        p.alpha = 1.25f;
        // Inputs are exact in both runs; only D's rounding (and fp32 summation order) differ.
        EXPECT_LT(run(p, seed += 5), tolerance(d))
            << dtype_name(ab) << " -> " << dtype_name(d) << " tb=" << tb;
      }
    }
  }
}

TEST_F(GpuGemmParity, BiasEpilogueAddsOneValuePerOutputColumn) {
  std::uint64_t seed = 200;
  for (DType t : kAllTypes) {
    Problem p;
    p.tb = true;  // y = x W^T + b, the base linear
    p.M = 7;
    p.N = 33;
    p.K = 40;
    p.ab = t;
    p.d = t;
    p.bias = true;
    EXPECT_LT(run(p, seed += 5), tolerance(t)) << dtype_name(t);
  }
}

TEST_F(GpuGemmParity, BetaOneAccumulatesInPlaceAndIntoADistinctC) {
  std::uint64_t seed = 300;
  for (DType t : kAllTypes) {
    for (bool separate : {false, true}) {
      Problem p;
      p.tb = true;
      p.M = 17;
      p.N = 9;
      p.K = 5;
      p.ab = t;
      p.d = t;
      p.alpha = 0.5f;
      p.beta = 1.0f;
      p.separate_c = separate;
      p.bias = separate;
      EXPECT_LT(run(p, seed += 5), tolerance(t)) << dtype_name(t) << " separate=" << separate;
    }
  }
}

TEST_F(GpuGemmParity, AlphaVectorScalesOutputColumnsWhereSupported) {
  std::uint64_t seed = 400;
  int supported = 0, unsupported = 0;
  for (DType t : kAllTypes) {
    for (float beta : {0.0f, 1.0f}) {
      Problem p;
      p.tb = true;
      p.M = 33;
      p.N = 64;
      p.K = 48;
      p.ab = t;
      p.d = t;
      p.alpha_vec = true;
      p.beta = beta;
      p.bias = beta != 0.0f;
      p.separate_c = beta != 0.0f;
      // Probe with the same pointers' alignment class as run() will use (fresh cudaMalloc).
      DeviceTensor probe_a = poisoned_as(std::size_t(p.M) * p.K, t);
      DeviceTensor probe_b = poisoned_as(std::size_t(p.N) * p.K, t);
      DeviceTensor probe_d = poisoned_as(std::size_t(p.M) * p.N, t);
      DeviceTensor probe_c = poisoned_as(std::size_t(p.M) * p.N, t);
      cuda::DeviceBuffer<float> probe_vec(p.N);
      cuda::GemmArgs g;
      g.trans_b = Trans::kYes;
      g.M = p.M;
      g.N = p.N;
      g.K = p.K;
      g.A = probe_a.data();
      g.lda = p.K;
      g.B = probe_b.data();
      g.ldb = p.K;
      g.ab_type = t;
      g.D = probe_d.data();
      g.ldd = p.N;
      g.d_type = t;
      g.C = p.separate_c ? probe_c.data() : nullptr;
      g.alpha_vec = probe_vec.data();
      g.beta = beta;
      g.bias = p.bias ? probe_b.data() : nullptr;
      if (cuda::gemm_supported(lt(), g)) {
        ++supported;
        EXPECT_LT(run(p, seed += 5), tolerance(t)) << dtype_name(t) << " beta=" << beta;
      } else {
        // No algorithm: gemm must refuse clearly (the DoRA kernels then use their fallback).
        ++unsupported;
        EXPECT_THROW(cuda::gemm(lt(), g, nullptr), std::runtime_error);
      }
    }
  }
  std::cout << "[ alpha vector ] supported for " << supported << " of 6 problems, " << unsupported
            << " fall back" << std::endl;
}

TEST_F(GpuGemmParity, BetaZeroNeverReadsAPoisonedOutput) {
  Problem p;
  p.M = 31;
  p.N = 17;
  p.K = 9;
  p.ab = DType::kF16;
  p.d = DType::kF16;
  EXPECT_LT(run(p, 500), kTolFp16);  // D starts as NaN everywhere
}

TEST_F(GpuGemmParity, EmptyInnerDimensionGivesBetaCPlusBias) {
  for (DType t : kAllTypes) {
    Problem p;
    p.M = 5;
    p.N = 7;
    p.K = 0;
    p.ab = t;
    p.d = t;
    p.beta = 0.5f;
    p.bias = true;
    p.separate_c = true;
    EXPECT_LT(run(p, 600), tolerance(t)) << dtype_name(t);
  }
}

TEST_F(GpuGemmParity, PlanCacheQueriesTheHeuristicOncePerProblem) {
  Problem p;
  p.tb = true;
  p.M = 8;
  p.N = 16;
  p.K = 32;
  p.ab = DType::kF16;
  p.d = DType::kF16;
  EXPECT_LT(run(p, 700), kTolFp16);
  const std::size_t queries = lt().heuristic_queries();
  EXPECT_LT(run(p, 701), kTolFp16);  // same key (fresh buffers, same alignment): cached
  EXPECT_EQ(lt().heuristic_queries(), queries);
  p.N = 24;
  EXPECT_LT(run(p, 702), kTolFp16);
  EXPECT_EQ(lt().heuristic_queries(), queries + 1);
  EXPECT_EQ(lt().cached_plans(), lt().heuristic_queries());
}

TEST(GpuGemmHelperParity, ScaleColumnsPaddedStridesEveryType) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const StridedCase& c : kStridedCases) {
    for (const DType t : kAllDTypes) check_scale_columns(env, c, t);
  }
}

TEST(GpuGemmHelperParity, EmptyProductEveryModeAndType) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const StridedCase& c : kStridedCases) {
    for (const EmptyProductMode& mode : kEmptyProductModes) {
      for (const DType t : kAllDTypes) check_empty_product(env, c, mode, t);
    }
  }
}

}  // namespace
}  // namespace peftrun::gpu_testing
