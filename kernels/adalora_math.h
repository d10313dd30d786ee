// AdaLoRA's per-element importance update and per-triplet score, shared by adalora_cpu.cpp
// (and the allocator) and adalora_cuda.cu, with individually rounded operations
// (kernels/exact_math.h) so both sides compute the same bits. See adalora.h for the formulas.
#pragma once

#include "kernels/exact_math.h"
#include "kernels/host_device.h"

namespace peftrun {

// torch evaluates `beta * t` on an fp32 tensor with beta rounded to fp32, and `1 - beta` in
// Python double before that rounding.
template <typename T>
struct ImportanceCoeffs {
  T b1, c1, b2, c2, gs;
  bool scaled;  // grad_scale != 1 (then g' = g * gs, else g as is)
};

template <typename T>
inline ImportanceCoeffs<T> importance_coeffs(double beta1, double beta2, double grad_scale) {
  return {static_cast<T>(beta1),       static_cast<T>(1.0 - beta1), static_cast<T>(beta2),
          static_cast<T>(1.0 - beta2), static_cast<T>(grad_scale),  grad_scale != 1.0};
}

// One element of PEFT's RankAllocator.update_ipt, every tensor op rounded to T:
//   ipt = |p g'|; ipt_ema = b1 ipt_ema + c1 ipt; unc_ema = b2 unc_ema + c2 |ipt - ipt_ema|.
template <typename T>
PEFTRUN_HD void importance_element(T p, T g, T& ipt_ema, T& unc_ema, const ImportanceCoeffs<T>& c) {
  const T gi = c.scaled ? mul_rn(g, c.gs) : g;
  const T ipt = abs_exact(mul_rn(p, gi));
  const T e = add_rn(mul_rn(c.b1, ipt_ema), mul_rn(c.c1, ipt));
  ipt_ema = e;
  const T dev = abs_exact(sub_rn(ipt, e));
  unc_ema = add_rn(mul_rn(c.b2, unc_ema), mul_rn(c.c2, dev));
}

// Triplet score S_k = s(E_k) + (mean_j s(A[k, j]) + mean_i s(B[i, k])) with s = ipt * unc
// (fp32 products, as PEFT's tensors): the sums of the element scores come in as double (sum_a
// over the `in` entries of A's row k, sum_b over the `out` entries of B's column k), each mean is
// rounded to fp32 once.
PEFTRUN_HD float triplet_score(float ipt_e, float unc_e, double sum_a, int in, double sum_b,
                               int out) {
  const float mean_a = static_cast<float>(div_rn(sum_a, static_cast<double>(in)));
  const float mean_b = static_cast<float>(div_rn(sum_b, static_cast<double>(out)));
  return add_rn(mul_rn(ipt_e, unc_e), add_rn(mean_a, mean_b));
}

}  // namespace peftrun
