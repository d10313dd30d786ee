// GEMM contract: C = alpha * op(A) @ op(B) + beta * C, all row-major.
//
// op(A) is [M, K], op(B) is [K, N], C is [M, N]; lda/ldb/ldc are row strides of the stored
// matrices (e.g. A stored [M, K] untransposed has lda = K; stored [K, M] and used transposed
// has lda = M). The CPU implementation calls OpenBLAS (sgemm/dgemm); the CUDA twin calls
// cuBLASLt (kernels/gemm_cuda.cu, mapping to column-major in kernels/gemm_plan.h).
#pragma once

#include <string>

#include "kernels/blaslt.h"
#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun {

enum class Trans { kNo, kYes };

namespace cpu {

using peftrun::Trans;

template <typename T>
void gemm(Trans trans_a, Trans trans_b, int M, int N, int K, T alpha, const T* A, int lda,
          const T* B, int ldb, T beta, T* C, int ldc);

// Sets the number of BLAS threads (0 = all cores).
void set_blas_threads(int threads);

// While one is alive, every BLAS call runs whole on the thread that makes it (OpenBLAS at one
// thread), so that many small GEMMs can run side by side on the kernel threads (parallel.h)
// instead of each being split over all cores: at attention's sizes (64-row blocks of one head)
// a split GEMM spends more on waking and waiting for the other threads than on arithmetic.
// A GEMM's last bits can depend on how many threads BLAS gives it (OpenBLAS's split decides
// which of its kernels, full tile or edge, computes an element), so the products made in such a
// scope also stop depending on the thread count. Restores the previous count; construct it on
// the thread that calls parallel_for, never on the kernel threads themselves.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_threads_;
};

// The BLAS in use, its kernel set and thread count, e.g. "OpenBLAS 0.3.21 (Cooperlake kernels,
// 2 threads)". The kernel set decides the CPU backend's speed (an OPENBLAS_CORETYPE override to
// an older set halves it on AVX-512 machines), so the run log names it.
std::string blas_description();

}  // namespace cpu

namespace cuda {

// One cuBLASLt matmul, row-major like the CPU contract, with the fused extras the adapters use:
//
//   D[i, j] = a_j * sum_k op(A)[i, k] op(B)[k, j] + beta * C[i, j] + bias[j]
//   a_j     = alpha_vec ? alpha_vec[j] : alpha
//
// Storage: A and B share `ab_type` (cuBLASLt has no mixed 16-bit inputs); D (and C) are
// `d_type`, which is ab_type or fp32; bias is d_type. Accumulation and scaling are always fp32
// (CUBLAS_COMPUTE_32F, scale type fp32). C has D's layout and may alias it (nullptr = D:
// accumulate in place); with beta = 0 it is never read, so D may hold garbage (NaN) before.
// alpha_vec is a device fp32 vector [N] (a per-output-channel scale: DoRA's m / n); cuBLASLt
// may offer no algorithm for that pointer mode on a shape: check gemm_supported first and fall
// back (see dora_cuda.cu), since gemm() throws when no algorithm exists.
struct GemmArgs {
  Trans trans_a = Trans::kNo, trans_b = Trans::kNo;
  int M = 0, N = 0, K = 0;
  const void* A = nullptr;
  int lda = 0;
  const void* B = nullptr;
  int ldb = 0;
  DType ab_type = DType::kF16;
  void* D = nullptr;
  int ldd = 0;
  DType d_type = DType::kF16;
  const void* C = nullptr;  // beta's input, D's layout and type; nullptr = D
  float alpha = 1.0f;
  const float* alpha_vec = nullptr;  // device [N] or nullptr
  float beta = 0.0f;
  const void* bias = nullptr;  // device [N] of d_type or nullptr (CUBLASLT_EPILOGUE_BIAS)
};

// A row-major GemmArgs with alpha = 1, beta = 0, no bias (callers adjust the rest).
inline GemmArgs make_gemm(Trans ta, Trans tb, int M, int N, int K, const void* A, int lda,
                          const void* B, int ldb, DType ab_type, void* D, int ldd, DType d_type) {
  GemmArgs g;
  g.trans_a = ta;
  g.trans_b = tb;
  g.M = M;
  g.N = N;
  g.K = K;
  g.A = A;
  g.lda = lda;
  g.B = B;
  g.ldb = ldb;
  g.ab_type = ab_type;
  g.D = D;
  g.ldd = ldd;
  g.d_type = d_type;
  return g;
}

// Enqueues the matmul on `stream`. Throws std::invalid_argument for inconsistent shapes,
// strides or types (naming them) and std::runtime_error when cuBLASLt has no algorithm or
// fails. M or N = 0: nothing to do; K = 0: D = beta * C + bias (a small kernel).
void gemm(BlasLt& lt, const GemmArgs& g, Stream stream);

// Whether cuBLASLt offers an algorithm for this problem (shape, types, strides, epilogue,
// pointer mode and pointer alignments), from the plan cache after the first query.
bool gemm_supported(BlasLt& lt, const GemmArgs& g);

// D[i, j] = round(Z[i, j] * scale[j]) for i < rows, j < cols (row stride ldd for both; Z the
// product in fp32, D of d_type, scale device fp32 [cols]): the fused fallback when no algorithm
// takes an alpha vector. Z must be the fp32 product, not D itself: a 16-bit product scaled
// after its rounding loses every scale within half an ulp of 1 (bf16: |scale - 1| < 2^-9).
void scale_columns(const float* Z, void* D, DType d_type, int rows, int cols, int ldd,
                   const float* scale, Stream stream);

}  // namespace cuda
}  // namespace peftrun
