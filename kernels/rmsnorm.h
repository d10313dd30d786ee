// RMSNorm over the last dimension (LLaMA): y = x / sqrt(mean(x^2) + eps) * weight.
//
// x, y, dy, dx: [rows, dim]; weight: [dim] (frozen); rstd: [rows], saved by forward for backward.
// The norm weight is part of the frozen base, so backward produces only dx (overwritten).
#pragma once

namespace peftrun::cpu {

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int rows, int dim, T eps);

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, int rows,
                      int dim);

}  // namespace peftrun::cpu
