// Cross-entropy's scalar formulas, shared by cross_entropy_cpu.cpp and the CUDA kernel
// (cross_entropy_blocks.h).
#pragma once

#include <cmath>

#include "kernels/host_device.h"

namespace peftrun {

// -log softmax(x)[target] = max + log(sum_j e^(x_j - max)) - x[target].
template <typename T>
PEFTRUN_HD T ce_row_loss(T max, T sum_exp, T x_target) {
  return max + std::log(sum_exp) - x_target;
}

// dlogits_j = e^(x_j - max) * k with k = grad_scale / sum_exp (softmax times grad_scale) ...
template <typename T>
PEFTRUN_HD T ce_softmax_grad(T e, T k) {
  return e * k;
}

// ... minus grad_scale at the target (the one-hot term).
template <typename T>
PEFTRUN_HD T ce_target_grad(T softmax_grad, T grad_scale) {
  return softmax_grad - grad_scale;
}

}  // namespace peftrun
