#include "kernels/rmsnorm.h"

#include <cmath>
#include <cstddef>

#include "kernels/parallel.h"
#include "kernels/rmsnorm_math.h"

namespace peftrun::cpu {
namespace {

// Rows are independent: split them over the kernel threads (parallel.h), each row computed by
// the serial code, so results do not depend on the thread count.
template <typename F>
void for_row_ranges(int rows, int dim, const F& fn) {
  const std::size_t min_rows = min_part_for(static_cast<std::size_t>(dim));
  parallel_for(static_cast<std::size_t>(rows), min_rows, [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) fn(static_cast<int>(r));
  });
}

}  // namespace

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T weight_offset, T* y, T* rstd, int rows, int dim,
                     T eps) {
  for_row_ranges(rows, dim, [&](int r) {
    const T* xr = x + static_cast<std::size_t>(r) * dim;  // [dim]
    T* yr = y + static_cast<std::size_t>(r) * dim;        // [dim]
    // Mean of squares accumulated in double: for float rows of a few thousand elements this
    // removes the summation error at negligible cost.
    double ss = 0.0;
    for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const T rs = static_cast<T>(rmsnorm_rstd(ss, dim, static_cast<double>(eps)));
    rstd[r] = rs;
    for (int i = 0; i < dim; ++i) {
      yr[i] = rmsnorm_scale(xr[i], rs, rmsnorm_weight(weight_offset, weight[i]));
    }
  });
}

// y_i = x_i * r * w_i with r = (mean(x^2) + eps)^-1/2, dr/dx_j = -r^3 x_j / dim, so with
// g = dy * w:  dx_j = r g_j - x_j r^3 / dim * sum_i g_i x_i.
template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, T weight_offset, const T* rstd,
                      T* dx, int rows, int dim) {
  for_row_ranges(rows, dim, [&](int r) {
    const std::size_t off = static_cast<std::size_t>(r) * dim;
    const T* xr = x + off;    // [dim]
    const T* dyr = dy + off;  // [dim]
    T* dxr = dx + off;        // [dim]
    double dot = 0.0;         // sum_i dy_i w_i x_i
    for (int i = 0; i < dim; ++i) {
      dot += static_cast<double>(dyr[i]) * rmsnorm_weight(weight_offset, weight[i]) * xr[i];
    }
    const T rs = rstd[r];
    const T c = static_cast<T>(rmsnorm_dx_coef(dot, dim, static_cast<double>(rs)));
    for (int i = 0; i < dim; ++i) {
      dxr[i] = rmsnorm_dx(rs, dyr[i], rmsnorm_weight(weight_offset, weight[i]), c, xr[i]);
    }
  });
}

template void rmsnorm_forward<float>(const float*, const float*, float, float*, float*, int, int,
                                     float);
template void rmsnorm_forward<double>(const double*, const double*, double, double*, double*, int,
                                      int, double);
template void rmsnorm_backward<float>(const float*, const float*, const float*, float, const float*,
                                      float*, int, int);
template void rmsnorm_backward<double>(const double*, const double*, const double*, double,
                                       const double*, double*, int, int);

}  // namespace peftrun::cpu
