#include <cmath>

#include "kernels/adamw.h"
#include "kernels/parallel.h"

namespace peftrun {

AdamWScalars adamw_scalars(const AdamWHyper& h) {
  const double t = static_cast<double>(h.step);
  AdamWScalars s;
  s.grad_scale = h.grad_scale;
  s.decay = 1.0 - h.lr * h.weight_decay;  // p -= lr wd p, as torch's p *= (1 - lr wd)
  s.one_minus_beta1 = 1.0 - h.beta1;
  s.beta2 = h.beta2;
  s.one_minus_beta2 = 1.0 - h.beta2;
  s.bias2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, t));
  s.eps = h.eps;
  s.step_size = h.lr / (1.0 - std::pow(h.beta1, t));
  return s;
}

namespace cpu {

// torch.optim.AdamW (single-tensor path), per element, evaluated in double and stored back as T
// (adamw_element, shared with the CUDA twin). The step-dependent scalars are hoisted.
template <typename T>
void adamw_step(T* params, const T* grads, T* m, T* v, std::size_t n, const AdamWHyper& h) {
  const AdamWScalars s = adamw_scalars(h);
  // Element-wise, so split over the kernel threads (each element's update is the serial one).
  parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) adamw_element(params[i], grads[i], m[i], v[i], s);
  });
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

}  // namespace cpu
}  // namespace peftrun
