// DoRA on a frozen linear layer (see dora.h for the math). Every product is a BLAS GEMM; the
// loops only apply the per-output-column factor g = m / n, the bias and the dropout mask. The
// [n, out] and [n, in] loops run on the kernel threads (parallel.h): on one core they were most
// of DoRA's cost over LoRA, with BLAS's other threads waiting.
#include "kernels/dora.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/gemm.h"
#include "kernels/parallel.h"

namespace peftrun::cpu {
namespace {

std::size_t sz(int a, int b) {
  return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

// g = m / n: [out]. Recomputed by forward and backward (out divisions, negligible) rather than
// saved, so the caller only keeps m and n.
template <typename T>
void dora_factor(const DoraLinearArgs<T>& a, T* g) {
  for (int j = 0; j < a.lora.out; ++j) g[j] = a.magnitude[j] / a.weight_norm[j];
}

// A pass over a row-major [rows, out] matrix, split over output columns: fn(j0, j1) handles
// columns [j0, j1) of every row. Each column is then summed over the rows in row order by one
// thread, so a column reduction (dm's) is the serial loop's whatever the thread count.
template <typename F>
void for_column_ranges(int rows, int out, const F& fn) {
  parallel_for(static_cast<std::size_t>(out), min_part_for(static_cast<std::size_t>(rows)),
               [&](std::size_t j0, std::size_t j1) { fn(int(j0), int(j1)); });
}

// x~ = keep ? x * keep_scale : 0 over [0, n) elements (also dx's mask in backward).
template <typename T>
void apply_keep(const T* x, const std::uint8_t* keep, T keep_scale, T* out, std::size_t n) {
  parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) out[i] = keep[i] ? x[i] * keep_scale : T(0);
  });
}

}  // namespace

template <typename T>
void row_sq_norms(const T* W, int out, int in, T* w_sq) {
  for (int j = 0; j < out; ++j) {
    const T* w = W + sz(j, in);  // [in]
    double acc = 0.0;
    for (int k = 0; k < in; ++k) acc += static_cast<double>(w[k]) * static_cast<double>(w[k]);
    w_sq[j] = static_cast<T>(acc);
  }
}

template <typename T>
void dora_weight_norm(const T* W, const T* w_sq, const T* A, const T* B, int out, int in, int r,
                      T scale, T* norm, T* work) {
  T* P = work;               // [out, r]: first W A^T, then B (A A^T)
  T* Q = work + sz(out, r);  // [r, r]:   A A^T
  const double s = static_cast<double>(scale);

  // Cross term 2s <B_j, (W A^T)_j>: the only product that touches W ([out, in] x [in, r]).
  gemm(Trans::kNo, Trans::kYes, out, r, in, T(1), W, in, A, in, T(0), P, r);
  // norm holds ||W||^2 + cross until the quadratic term is known (P is reused below).
  for (int j = 0; j < out; ++j) {
    const T* b = B + sz(j, r);  // [r]
    const T* p = P + sz(j, r);  // [r]
    double cross = 0.0;
    for (int k = 0; k < r; ++k) cross += static_cast<double>(b[k]) * static_cast<double>(p[k]);
    norm[j] = static_cast<T>(static_cast<double>(w_sq[j]) + 2.0 * s * cross);
  }

  // Quadratic term s^2 ||(B A)_j||^2 = s^2 B_j (A A^T) B_j^T, through the small Gram matrix.
  gemm(Trans::kNo, Trans::kYes, r, r, in, T(1), A, in, A, in, T(0), Q, r);
  gemm(Trans::kNo, Trans::kNo, out, r, r, T(1), B, r, Q, r, T(0), P, r);
  for (int j = 0; j < out; ++j) {
    const T* b = B + sz(j, r);
    const T* p = P + sz(j, r);
    double quad = 0.0;
    for (int k = 0; k < r; ++k) quad += static_cast<double>(b[k]) * static_cast<double>(p[k]);
    const double n2 = static_cast<double>(norm[j]) + s * s * quad;
    // The expansion cancels terms, so a (near-)zero row can come out slightly negative.
    norm[j] = static_cast<T>(std::sqrt(std::max(n2, 0.0)));
  }
}

template <typename T>
void dora_linear_forward(const DoraLinearArgs<T>& a, const T* x, T* y) {
  const LoraLinearArgs<T>& l = a.lora;
  T* g = a.work;  // [out]
  dora_factor(a, g);

  if (!l.keep) {
    // y = b + g * z with z = x W^T + s xa B^T (z is also dm's saved input).
    gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.in, T(1), x, l.in, l.W, l.in, T(0), a.z, l.out);
    gemm(Trans::kNo, Trans::kYes, l.n, l.r, l.in, T(1), x, l.in, l.A, l.in, T(0), l.xa, l.r);
    gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.r, l.scale, l.xa, l.r, l.B, l.r, T(1), a.z, l.out);
    for_column_ranges(l.n, l.out, [&](int j0, int j1) {
      for (int i = 0; i < l.n; ++i) {
        const T* zr = a.z + sz(i, l.out);  // [out]
        T* yr = y + sz(i, l.out);          // [out]
        for (int j = j0; j < j1; ++j) yr[j] = (l.bias ? l.bias[j] : T(0)) + g[j] * zr[j];
      }
    });
    return;
  }

  // Dropout: PEFT's form y = (x W^T + b) + (g - 1) * (x~ W^T) + g * s x~ A^T B^T.
  // Base output on the clean x, bias seeded first so GEMM accumulates onto it (beta = 1).
  T beta = T(0);
  if (l.bias) {
    for_column_ranges(l.n, l.out, [&](int j0, int j1) {
      for (int i = 0; i < l.n; ++i) std::copy(l.bias + j0, l.bias + j1, y + sz(i, l.out) + j0);
    });
    beta = T(1);
  }
  gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.in, T(1), x, l.in, l.W, l.in, beta, y, l.out);

  apply_keep(x, l.keep, l.keep_scale, l.x_drop, sz(l.n, l.in));
  const T* xd = l.x_drop;  // x~ [n, in]

  // z = x~ W^T first: (g - 1) multiplies exactly that part, as in PEFT (a factor that is ~0 at
  // init, so the correction adds almost no rounding to the clean base output).
  gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.in, T(1), xd, l.in, l.W, l.in, T(0), a.z, l.out);
  for_column_ranges(l.n, l.out, [&](int j0, int j1) {
    for (int i = 0; i < l.n; ++i) {
      const T* zr = a.z + sz(i, l.out);
      T* yr = y + sz(i, l.out);
      for (int j = j0; j < j1; ++j) yr[j] += (g[j] - T(1)) * zr[j];
    }
  });
  gemm(Trans::kNo, Trans::kYes, l.n, l.r, l.in, T(1), xd, l.in, l.A, l.in, T(0), l.xa, l.r);
  // y += g * (s xa B^T) = s xa (diag(g) B)^T: scaling B's rows ([out, r], small) lets one GEMM
  // apply g without an [n, out] temporary for the LoRA product.
  T* Bg = a.work + l.out;  // [out, r]
  for (int j = 0; j < l.out; ++j) {
    for (int k = 0; k < l.r; ++k) Bg[sz(j, l.r) + k] = g[j] * l.B[sz(j, l.r) + k];
  }
  gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.r, l.scale, l.xa, l.r, Bg, l.r, T(1), y, l.out);
  // z += s xa B^T completes dm's input.
  gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.r, l.scale, l.xa, l.r, l.B, l.r, T(1), a.z, l.out);
}

template <typename T>
void dora_linear_backward(const DoraLinearArgs<T>& a, const T* x, const T* dy, T* dx, T* dA, T* dB,
                          T* dm) {
  const LoraLinearArgs<T>& l = a.lora;
  T* g = a.work;                                        // [out]
  T* colsum = a.work + l.out;                           // [out]
  T* dyg = a.work + 2 * sz(l.out, 1);                   // [n, out]
  T* dxa = a.work + 2 * sz(l.out, 1) + sz(l.n, l.out);  // [n, r]
  dora_factor(a, g);

  // One pass over dy: dm[j] += sum_i dy[i, j] z[i, j] / n[j] (each column summed in row order)
  // and dyg = dy * g, what the LoRA branch sees in both forms.
  for_column_ranges(l.n, l.out, [&](int j0, int j1) {
    std::fill(colsum + j0, colsum + j1, T(0));
    for (int i = 0; i < l.n; ++i) {
      const T* dyr = dy + sz(i, l.out);
      const T* zr = a.z + sz(i, l.out);
      T* o = dyg + sz(i, l.out);
      for (int j = j0; j < j1; ++j) {
        colsum[j] += dyr[j] * zr[j];
        o[j] = dyr[j] * g[j];
      }
    }
  });
  for (int j = 0; j < l.out; ++j) dm[j] += colsum[j] / a.weight_norm[j];
  const T* xin = l.keep ? l.x_drop : x;  // x~ as used by forward: [n, in]
  // dB += s (dy g)^T xa : [out, r]
  gemm(Trans::kYes, Trans::kNo, l.out, l.r, l.n, l.scale, dyg, l.out, l.xa, l.r, T(1), dB, l.r);
  // dxa = s (dy g) B : [n, r]
  gemm(Trans::kNo, Trans::kNo, l.n, l.r, l.out, l.scale, dyg, l.out, l.B, l.r, T(0), dxa, l.r);
  // dA += dxa^T x~ : [r, in]
  gemm(Trans::kYes, Trans::kNo, l.r, l.in, l.n, T(1), dxa, l.r, xin, l.in, T(1), dA, l.in);
  if (!dx) return;

  if (!l.keep) {
    // dx = (dy g) W + dxa A
    gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.out, T(1), dyg, l.out, l.W, l.in, T(0), dx, l.in);
    gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.r, T(1), dxa, l.r, l.A, l.in, T(1), dx, l.in);
    return;
  }
  // dx = dy W + keep_scale keep * [ (dy (g - 1)) W + dxa A ]: the bracket is d/dx~, built in dx,
  // masked in place, then the clean-path GEMM accumulates on top (no [n, in] temporary).
  for_column_ranges(l.n, l.out, [&](int j0, int j1) {
    for (int i = 0; i < l.n; ++i) {
      const T* dyr = dy + sz(i, l.out);
      T* o = dyg + sz(i, l.out);
      for (int j = j0; j < j1; ++j) o[j] = dyr[j] * (g[j] - T(1));
    }
  });
  gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.out, T(1), dyg, l.out, l.W, l.in, T(0), dx, l.in);
  gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.r, T(1), dxa, l.r, l.A, l.in, T(1), dx, l.in);
  apply_keep(dx, l.keep, l.keep_scale, dx, sz(l.n, l.in));
  gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.out, T(1), dy, l.out, l.W, l.in, T(1), dx, l.in);
}

#define PEFTRUN_INSTANTIATE_DORA(T)                                                               \
  template void row_sq_norms<T>(const T*, int, int, T*);                                          \
  template void dora_weight_norm<T>(const T*, const T*, const T*, const T*, int, int, int, T, T*, \
                                    T*);                                                          \
  template void dora_linear_forward<T>(const DoraLinearArgs<T>&, const T*, T*);                   \
  template void dora_linear_backward<T>(const DoraLinearArgs<T>&, const T*, const T*, T*, T*, T*, \
                                        T*);
PEFTRUN_INSTANTIATE_DORA(float)
PEFTRUN_INSTANTIATE_DORA(double)
#undef PEFTRUN_INSTANTIATE_DORA

}  // namespace peftrun::cpu
