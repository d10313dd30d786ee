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

// GELU's tanh approximation (PyTorch's gelu(approximate="tanh"), HF's "gelu_pytorch_tanh"):
// 0.5 x (1 + tanh(u)) with u = sqrt(2 / pi) (x + 0.044715 x^3). As 1 + tanh(u) = 2 sigmoid(2u),
// it is evaluated as x sigmoid(2u): the overflow-safe sigmoid above, and no cancellation in
// 1 + tanh(u) where u << 0.
template <typename T>
PEFTRUN_HD T gelu_tanh_two_u(T x) {
  const T two_k = T(1.5957691216057308);  // 2 sqrt(2 / pi)
  return two_k * (x + T(0.044715) * x * x * x);
}

template <typename T>
PEFTRUN_HD T gelu_tanh(T x) {
  return x * sigmoid(gelu_tanh_two_u(x));
}

// d/dx x s(2u) = s + x s (1 - s) d(2u)/dx, with d(2u)/dx = 2 sqrt(2 / pi) (1 + 3 * 0.044715 x^2).
template <typename T>
PEFTRUN_HD T gelu_tanh_grad(T x) {
  const T s = sigmoid(gelu_tanh_two_u(x));
  const T two_k = T(1.5957691216057308);
  return s + x * s * (T(1) - s) * two_k * (T(1) + T(0.134145) * x * x);
}

// The activation of a gated MLP: down(act(gate) * up). SwiGLU (LLaMA, Mistral, Qwen) uses silu,
// GeGLU (Gemma) GELU's tanh approximation.
enum class GluActivation { kSilu, kGeluTanh };

// out = act(g) * u
template <typename T>
PEFTRUN_HD T glu(GluActivation act, T g, T u) {
  return (act == GluActivation::kSilu ? silu(g) : gelu_tanh(g)) * u;
}

// d/dg = dout * u * act'(g) ; d/du = dout * act(g).
template <typename T>
PEFTRUN_HD void glu_grad(GluActivation act, T dout, T g, T u, T* dg, T* du) {
  if (act == GluActivation::kSilu) {
    const T sig = sigmoid(g);
    *dg = dout * u * silu_grad_from_sigmoid(g, sig);
    *du = dout * g * sig;
  } else {
    *dg = dout * u * gelu_tanh_grad(g);
    *du = dout * gelu_tanh(g);
  }
}

}  // namespace peftrun
