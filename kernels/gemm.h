// GEMM contract: C = alpha * op(A) @ op(B) + beta * C, all row-major.
//
// op(A) is [M, K], op(B) is [K, N], C is [M, N]; lda/ldb/ldc are row strides of the stored
// matrices (e.g. A stored [M, K] untransposed has lda = K; stored [K, M] and used transposed
// has lda = M). The CPU implementation calls OpenBLAS (sgemm/dgemm).
#pragma once

namespace peftrun::cpu {

enum class Trans { kNo, kYes };

template <typename T>
void gemm(Trans trans_a, Trans trans_b, int M, int N, int K, T alpha, const T* A, int lda,
          const T* B, int ldb, T beta, T* C, int ldc);

// Sets the number of BLAS threads (0 = all cores).
void set_blas_threads(int threads);

}  // namespace peftrun::cpu
