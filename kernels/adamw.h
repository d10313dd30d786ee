// AdamW over a flat fp32 buffer, exactly torch.optim.AdamW (decoupled weight decay):
//   p -= lr * wd * p
//   m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2          (g = grad * grad_scale)
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// step is 1-based. grad_scale carries global-norm clipping (and, later, loss-scale undo).
#pragma once

#include <cstddef>

namespace peftrun::cpu {

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  long step = 1;
  double grad_scale = 1.0;
};

template <typename T>
void adamw_step(T* params, const T* grads, T* m, T* v, std::size_t n, const AdamWHyper& h);

// Sum of squares in double (for the global gradient norm).
template <typename T>
double sum_squares(const T* x, std::size_t n);

}  // namespace peftrun::cpu
