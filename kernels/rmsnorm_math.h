// RMSNorm's scalar formulas, shared by rmsnorm_cpu.cpp and the CUDA kernel (rmsnorm_blocks.h), so
// the CPU tests exercise the very expressions the GPU evaluates. Acc is the accumulation type
// (double on the CPU, float on the GPU), T the element compute type.
#pragma once

#include <cmath>

#include "kernels/host_device.h"

namespace peftrun {

// 1 / sqrt(mean(x^2) + eps) from the row's sum of squares.
template <typename Acc>
PEFTRUN_HD Acc rmsnorm_rstd(Acc sum_sq, int dim, Acc eps) {
  return Acc(1) / std::sqrt(sum_sq / dim + eps);
}

// The scale a weight stands for: w itself (LLaMA: offset 0) or 1 + w (Gemma stores its norm
// weights around 0 and scales by 1 + w; transformers adds the two in fp32, as here).
template <typename T>
PEFTRUN_HD T rmsnorm_weight(T offset, T w) {
  return offset + w;
}

// y = x * rstd * w (in this order, as the CPU has always evaluated it).
template <typename T>
PEFTRUN_HD T rmsnorm_scale(T x, T rstd, T w) {
  return x * rstd * w;
}

// With dot = sum_i dy_i w_i x_i: c = dot / dim * rstd^3, and dx = rstd dy w - c x.
template <typename Acc>
PEFTRUN_HD Acc rmsnorm_dx_coef(Acc dot, int dim, Acc rstd) {
  return dot / dim * rstd * rstd * rstd;
}

template <typename T>
PEFTRUN_HD T rmsnorm_dx(T rstd, T dy, T w, T c, T x) {
  return rstd * dy * w - c * x;
}

}  // namespace peftrun
