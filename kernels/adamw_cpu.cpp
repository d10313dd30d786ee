#include "kernels/adamw.h"

#include <cmath>

namespace peftrun::cpu {

// torch.optim.AdamW (single-tensor path), per element, evaluated in double and stored back as T.
// The step-dependent scalars are hoisted out of the loop.
template <typename T>
void adamw_step(T* params, const T* grads, T* m, T* v, std::size_t n, const AdamWHyper& h) {
  const double t = static_cast<double>(h.step);
  const double bias1 = 1.0 - std::pow(h.beta1, t);
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, t));
  const double step_size = h.lr / bias1;
  const double decay = 1.0 - h.lr * h.weight_decay;  // p -= lr wd p, as torch's p *= (1 - lr wd)
  for (std::size_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(grads[i]) * h.grad_scale;
    // Same operations in the same order as torch: param.mul_(1 - lr wd); exp_avg.lerp_(g, 1 - b1);
    // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2); param.addcdiv_(exp_avg, denom, -step_size).
    // The moments are rounded to T before use, as torch's fp32 state is, so the update applied
    // is the one implied by the state the next step reads.
    const double p = static_cast<double>(params[i]) * decay;
    const double m_old = static_cast<double>(m[i]);
    m[i] = static_cast<T>(m_old + (1.0 - h.beta1) * (g - m_old));
    v[i] = static_cast<T>(static_cast<double>(v[i]) * h.beta2 + (1.0 - h.beta2) * g * g);
    const double denom = std::sqrt(static_cast<double>(v[i])) / bias2_sqrt + h.eps;
    params[i] = static_cast<T>(p - step_size * (static_cast<double>(m[i]) / denom));
  }
}

template <typename T>
double sum_squares(const T* x, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

template void adamw_step<float>(float*, const float*, float*, float*, std::size_t,
                                const AdamWHyper&);
template void adamw_step<double>(double*, const double*, double*, double*, std::size_t,
                                 const AdamWHyper&);
template double sum_squares<float>(const float*, std::size_t);
template double sum_squares<double>(const double*, std::size_t);

}  // namespace peftrun::cpu
