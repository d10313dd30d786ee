// Scalar element-wise math shared by the CPU loops and (later) the CUDA kernels, so the CPU tests
// exercise the exact formula the GPU runs. Templates on the compute type T (float or double).
#pragma once

#include "kernels/exp_math.h"
#include "kernels/host_device.h"

namespace peftrun {

// sigmoid(x) = 1 / (1 + e^-x), evaluated so that exp never overflows: with e = e^-|x| <= 1 it is
// 1 / (1 + e) for x >= 0 and the equivalent e / (1 + e) for x < 0, which also keeps full
// relative precision for large negative x instead of rounding 1 + e^-x to +inf. Written without
// branches (one exp, one division, selects) so that the CPU loops vectorise.
template <typename T>
PEFTRUN_HD T sigmoid(T x) {
  const bool non_negative = x >= T(0);
  const T e = exp_nonpositive(non_negative ? -x : x);
  return (non_negative ? T(1) : e) / (T(1) + e);
}

// silu(x) = x * sigmoid(x) (a.k.a. swish).
template <typename T>
PEFTRUN_HD T silu(T x) {
  return x * sigmoid(x);
}

// d silu / dx = sig + x sig (1 - sig) = sig (1 + x (1 - sig)), given sig = sigmoid(x) so that
// forward-and-backward fused code evaluates the exponential once.
template <typename T>
PEFTRUN_HD T silu_grad_from_sigmoid(T x, T sig) {
  return sig * (T(1) + x * (T(1) - sig));
}

template <typename T>
PEFTRUN_HD T silu_grad(T x) {
  return silu_grad_from_sigmoid(x, sigmoid(x));
}

// SwiGLU pieces: out = silu(g) * u ; d/dg = dout * u * silu'(g) ; d/du = dout * silu(g).
template <typename T>
PEFTRUN_HD T swiglu(T g, T u) {
  return silu(g) * u;
}

template <typename T>
PEFTRUN_HD void swiglu_grad(T dout, T g, T u, T* dg, T* du) {
  const T sig = sigmoid(g);
  *dg = dout * u * silu_grad_from_sigmoid(g, sig);
  *du = dout * g * sig;
}

}  // namespace peftrun
