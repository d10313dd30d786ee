// Per-row DoRA math shared by the CUDA kernels (kernels/dora_blocks.h) and the CPU tests that
// check the GPU's algorithm against the CPU twin in double (tests/device_math_test.cpp).
// See dora.h for the definitions (g = m / n, the rank-r norm identity, the saved v).
#pragma once

#include <math.h>

#include "kernels/host_device.h"

namespace peftrun {

// Row j of the rank-r norm identity:
//   n^2 = ||W_j||^2 + 2s <B_j, P_j> + s^2 B_j G B_j^T,   P = W A^T [out, r], G = A A^T [r, r]
// in double, clamped at 0 before the square root (the expansion can round a ~0 row below 0).
// b, p: row j of B and P ([r] each); G row-major [r, r]; any of them a pointer or a Span (the
// kernels pass bounds-checked Spans, kernels/dora_blocks.h).
// T = float on the GPU; the CPU tests also run it in double.
template <typename T, class BRow, class PRow, class GMat>
PEFTRUN_HD T dora_norm_from_parts(T w_sq, const BRow& b, const PRow& p, const GMat& G, int r,
                                  T scale) {
  const double s = scale;
  double cross = 0.0, quad = 0.0;
  for (int k = 0; k < r; ++k) {
    cross += static_cast<double>(b[k]) * static_cast<double>(p[k]);
    double gb = 0.0;  // (G B_j^T)_k
    for (int l = 0; l < r; ++l) gb += static_cast<double>(G[k * r + l]) * static_cast<double>(b[l]);
    quad += static_cast<double>(b[k]) * gb;
  }
  const double n2 = static_cast<double>(w_sq) + 2.0 * s * cross + s * s * quad;
  return static_cast<T>(sqrt(n2 > 0.0 ? n2 : 0.0));
}

// Row j of DoRA's adapter gradients on the GPU. With P = dy^T xa [out, r] and
// colsum_j = sum_i dy[i, j] v[i, j], where v = g * (x~ W^T) is what forward saved:
//   dB[j, k] += s g_j P[j, k]                         (= s (dy g)^T xa)
//   dm_j     += colsum_j / m_j + (s / n_j) <B_j, P_j>  (= sum_i dy[i, j] z[i, j] / n_j)
// since z = x~ W^T + s xa B^T = v / g + s xa B^T and g n = m. Returns the dm increment; b, p,
// db: row j of B, P and dB ([r] each; pointers or Spans).
template <typename T, class BRow, class PRow, class DbRow>
PEFTRUN_HD T dora_row_grads(T g, T m, T n, T scale, T colsum, const BRow& b, const PRow& p,
                            const DbRow& db, int r) {
  T bp = T(0);
  for (int k = 0; k < r; ++k) {
    db[k] += scale * g * p[k];
    bp += b[k] * p[k];
  }
  return colsum / m + scale / n * bp;
}

}  // namespace peftrun
