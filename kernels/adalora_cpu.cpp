// AdaLoRA kernels (see adalora.h). The linear layer reuses lora_linear with an E-scaled copy of
// A, so dropout handling and the GEMM sequence exist once; only the E chain rule is added here.
#include "kernels/adalora.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels/adalora_math.h"
#include "kernels/gemm.h"

namespace peftrun::cpu {
namespace {

std::size_t sz(int a, int b) {
  return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

// A~ = E * A (row k of A scaled by E[k]): [r, in]. Same rounding as PEFT's lora_A * lora_E.
template <typename T>
void scale_rows(const T* A, const T* E, int r, int in, T* out) {
  for (int k = 0; k < r; ++k) {
    const T* a = A + sz(k, in);
    T* o = out + sz(k, in);
    for (int j = 0; j < in; ++j) o[j] = a[j] * E[k];
  }
}

}  // namespace

template <typename T>
void adalora_linear_forward(const AdaLoraLinearArgs<T>& a, const T* x, T* y) {
  LoraLinearArgs<T> l = a.lora;  // a copy whose A points at A~
  T* A_scaled = a.work;          // [r, in]
  scale_rows(a.lora.A, a.E, l.r, l.in, A_scaled);
  l.A = A_scaled;
  lora_linear_forward(l, x, y);
}

template <typename T>
void adalora_linear_backward(const AdaLoraLinearArgs<T>& a, const T* x, const T* dy, T* dx, T* dA,
                             T* dE, T* dB) {
  const int r = a.lora.r, in = a.lora.in;
  LoraLinearArgs<T> l = a.lora;
  T* A_scaled = a.work;               // [r, in] (rebuilt: the workspace may have been reused)
  T* dA_scaled = a.work + sz(r, in);  // [r, in]
  T* dxa = a.work + 2 * sz(r, in);    // [n, r]
  scale_rows(a.lora.A, a.E, r, in, A_scaled);
  l.A = A_scaled;
  // lora_linear_backward accumulates dA~ into a zeroed buffer: the result is dA~ itself, which
  // both dA and dE need. dx (through A~) and dB come out as for plain LoRA.
  std::fill(dA_scaled, dA_scaled + sz(r, in), T(0));
  lora_linear_backward(l, x, dy, dx, dA_scaled, dB, dxa);
  for (int k = 0; k < r; ++k) {
    const T* g = dA_scaled + sz(k, in);  // dA~[k, :]
    const T* p = a.lora.A + sz(k, in);   // A[k, :]
    T* d = dA + sz(k, in);
    T acc = T(0);
    for (int j = 0; j < in; ++j) {
      d[j] += a.E[k] * g[j];
      acc += g[j] * p[j];
    }
    dE[k] += acc;
  }
}

template <typename T>
double orth_reg(const T* P, int rows, int cols, bool is_A, T weight, T* grad, T* work) {
  // C = P P^T - I ([rows, rows]) for A, P^T P - I ([cols, cols]) for B.
  const int d = is_A ? rows : cols;
  T* C = work;  // [d, d]
  if (is_A) {
    gemm(Trans::kNo, Trans::kYes, rows, rows, cols, T(1), P, cols, P, cols, T(0), C, rows);
  } else {
    gemm(Trans::kYes, Trans::kNo, cols, cols, rows, T(1), P, cols, P, cols, T(0), C, cols);
  }
  double sq = 0.0;
  for (int i = 0; i < d; ++i) {
    C[sz(i, d) + i] -= T(1);
    for (int j = 0; j < d; ++j) {
      const double c = static_cast<double>(C[sz(i, d) + j]);
      sq += c * c;
    }
  }
  const double norm = std::sqrt(sq);
  // d||C||/dP: C is symmetric, so both factors of the Gram product contribute the same term,
  // hence the 2. At ||C|| = 0 the norm is not differentiable; torch's backward returns 0 there.
  if (grad && norm > 0.0 && weight != T(0)) {
    const T alpha = static_cast<T>(2.0 * static_cast<double>(weight) / norm);
    if (is_A) {  // grad += alpha C P : [rows, rows] x [rows, cols]
      gemm(Trans::kNo, Trans::kNo, rows, cols, rows, alpha, C, rows, P, cols, T(1), grad, cols);
    } else {  // grad += alpha P C : [rows, cols] x [cols, cols]
      gemm(Trans::kNo, Trans::kNo, rows, cols, cols, alpha, P, cols, C, cols, T(1), grad, cols);
    }
  }
  return norm;
}

template <typename T>
void adalora_update_importance(const T* p, const T* g, T* ipt_ema, T* unc_ema, std::size_t n,
                               double beta1, double beta2, double grad_scale) {
  const ImportanceCoeffs<T> c = importance_coeffs<T>(beta1, beta2, grad_scale);
  for (std::size_t i = 0; i < n; ++i) importance_element(p[i], g[i], ipt_ema[i], unc_ema[i], c);
}

void adalora_triplet_scores(const float* ipt, const float* unc, const AdaLoraModuleView& m,
                            float* scores) {
  const std::size_t r = static_cast<std::size_t>(m.r);
  const std::size_t in = static_cast<std::size_t>(m.in);
  const std::size_t out = static_cast<std::size_t>(m.out);
  for (std::size_t k = 0; k < r; ++k) {
    double sum_a = 0.0;
    for (std::size_t j = 0; j < in; ++j) {
      const std::size_t o = m.a + k * in + j;  // A[k, j]
      sum_a += static_cast<double>(mul_rn(ipt[o], unc[o]));
    }
    double sum_b = 0.0;
    for (std::size_t j = 0; j < out; ++j) {
      const std::size_t o = m.b + j * r + k;  // B[j, k]
      sum_b += static_cast<double>(mul_rn(ipt[o], unc[o]));
    }
    const std::size_t oe = m.e + k;
    scores[k] = triplet_score(ipt[oe], unc[oe], sum_a, m.in, sum_b, m.out);
  }
}

#define PEFTRUN_INSTANTIATE_ADALORA(T)                                                          \
  template void adalora_linear_forward<T>(const AdaLoraLinearArgs<T>&, const T*, T*);           \
  template void adalora_linear_backward<T>(const AdaLoraLinearArgs<T>&, const T*, const T*, T*, \
                                           T*, T*, T*);                                         \
  template double orth_reg<T>(const T*, int, int, bool, T, T*, T*);                             \
  template void adalora_update_importance<T>(const T*, const T*, T*, T*, std::size_t, double,   \
                                             double, double);
PEFTRUN_INSTANTIATE_ADALORA(float)
PEFTRUN_INSTANTIATE_ADALORA(double)
#undef PEFTRUN_INSTANTIATE_ADALORA

}  // namespace peftrun::cpu
