// One AdamW element, shared by adamw_cpu.cpp and adamw_cuda.cu so both compute the very same
// bits (see adamw.h for the formula). Every operation is in double and individually rounded
// (kernels/exact_math.h), in torch's order; the step-dependent scalars are computed once on the
// host (std::pow) and passed in.
#pragma once

#include "kernels/exact_math.h"
#include "kernels/host_device.h"

namespace peftrun {

struct AdamWScalars {
  double grad_scale = 1.0;       // g = grad * grad_scale
  double decay = 1.0;            // 1 - lr * weight_decay
  double one_minus_beta1 = 0.1;  // 1 - beta1
  double beta2 = 0.999;
  double one_minus_beta2 = 0.001;  // 1 - beta2
  double bias2_sqrt = 1.0;         // sqrt(1 - beta2^t)
  double eps = 1e-8;
  double step_size = 1e-3;  // lr / (1 - beta1^t)
};

// param.mul_(1 - lr wd); exp_avg.lerp_(g, 1 - b1); exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2);
// param.addcdiv_(exp_avg, denom, -step_size), with the moments rounded to T before use, as
// torch's fp32 state is.
template <typename T>
PEFTRUN_HD void adamw_element(T& param, T grad, T& m, T& v, const AdamWScalars& s) {
  const double g = mul_rn(static_cast<double>(grad), s.grad_scale);
  const double p = mul_rn(static_cast<double>(param), s.decay);
  const double m_old = static_cast<double>(m);
  m = static_cast<T>(add_rn(m_old, mul_rn(s.one_minus_beta1, sub_rn(g, m_old))));
  v = static_cast<T>(
      add_rn(mul_rn(static_cast<double>(v), s.beta2), mul_rn(mul_rn(s.one_minus_beta2, g), g)));
  const double denom = add_rn(div_rn(sqrt_rn(static_cast<double>(v)), s.bias2_sqrt), s.eps);
  param = static_cast<T>(sub_rn(p, mul_rn(s.step_size, div_rn(static_cast<double>(m), denom))));
}

}  // namespace peftrun
