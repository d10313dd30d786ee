// GEMM through OpenBLAS (row-major cblas). Every CPU matrix product in peftrun goes through here,
// so the BLAS choice and its threading are decided in one place.
#include "kernels/gemm.h"
#include "kernels/parallel.h"

#include <cblas.h>
#include <dlfcn.h>

#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <string>

namespace peftrun::cpu {
namespace {

CBLAS_TRANSPOSE to_cblas(Trans t) {
  return t == Trans::kYes ? CblasTrans : CblasNoTrans;
}

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
               const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, double alpha,
               const double* A, int lda, const double* B, int ldb, double beta, double* C,
               int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Whether OpenBLAS's idle threads were told to sleep at once (make_blas_threads_sleep_when_idle).
bool g_blas_threads_sleep = false;

// OpenBLAS's idle threads spin (sched_yield) for 2^28 cycles, ~0.1 s, after each job before they
// sleep. peftrun's kernel threads (parallel.h) run between the GEMMs on the same cores, and a
// spinning BLAS thread takes that core's time from them: on 2 cores a `small` step was 13%
// slower, attention's forward and backward 40% (bench/NOTES.md section 6).
// OPENBLAS_THREAD_TIMEOUT=4 (its minimum, 16 cycles) makes them sleep at once; waking one costs
// microseconds per GEMM. OpenBLAS reads the variable when it starts its threads, which it does
// at load time, so it is set here, re-read and the threads stopped; they restart with the new
// timeout at the next GEMM (the path OpenBLAS's own fork handler takes). A user's own
// OPENBLAS_THREAD_TIMEOUT is left alone. The two functions are internals that OpenBLAS's
// pthreads build exports, hence dlsym: where they are missing (another build or BLAS), nothing
// changes.
void make_blas_threads_sleep_when_idle() {
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr) return;
  using Fn = void (*)();
  using IntFn = int (*)();
  auto read_env = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_read_env"));
  auto shutdown = reinterpret_cast<IntFn>(dlsym(RTLD_DEFAULT, "blas_thread_shutdown_"));
  if (read_env == nullptr || shutdown == nullptr) return;
  if (setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0) != 0) return;
  read_env();
  shutdown();
  g_blas_threads_sleep = true;
}

}  // namespace

template <typename T>
void gemm(Trans trans_a, Trans trans_b, int M, int N, int K, T alpha, const T* A, int lda,
          const T* B, int ldb, T beta, T* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    // Empty inner dimension: C = beta * C. Handled here because BLAS implementations disagree
    // on (or reject) K = 0 with the lda/ldb values callers naturally pass in that case.
    for (int i = 0; i < M; ++i) {
      T* c = C + static_cast<std::size_t>(i) * ldc;
      for (int j = 0; j < N; ++j) c[j] = beta == T(0) ? T(0) : beta * c[j];
    }
    return;
  }
  blas_gemm(to_cblas(trans_a), to_cblas(trans_b), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void set_blas_threads(int threads) {
  static std::once_flag once;
  std::call_once(once, make_blas_threads_sleep_when_idle);
  // 0 (or negative) leaves OpenBLAS at its default, which is every core unless the user pinned it
  // with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment.
  if (threads > 0) openblas_set_num_threads(threads);
  // peftrun's own loops (parallel.h) use as many: 0 = every core, like OpenBLAS's default.
  set_kernel_threads(threads);
}

SingleThreadedBlas::SingleThreadedBlas() : saved_threads_(openblas_get_num_threads()) {
  if (saved_threads_ != 1) openblas_set_num_threads(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (saved_threads_ != 1) openblas_set_num_threads(saved_threads_);
}

std::string blas_description() {
  // openblas_get_config() reads e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY
  // Haswell MAX_THREADS=64": keep the name and version only.
  std::string config = openblas_get_config();
  std::size_t cut = config.find(' ');
  if (cut != std::string::npos) cut = config.find(' ', cut + 1);
  return config.substr(0, cut) + " (" + openblas_get_corename() + " kernels, " +
         std::to_string(openblas_get_num_threads()) + " threads" +
         (g_blas_threads_sleep ? ", idle threads sleep at once)" : ")");
}

template void gemm<float>(Trans, Trans, int, int, int, float, const float*, int, const float*, int,
                          float, float*, int);
template void gemm<double>(Trans, Trans, int, int, int, double, const double*, int, const double*,
                           int, double, double*, int);

}  // namespace peftrun::cpu
