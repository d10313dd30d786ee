// Frozen linear + LoRA branch; every product is a BLAS GEMM (the element-wise dropout and bias
// handling are the only loops).
#include "kernels/lora_linear.h"

#include <cstddef>

#include "kernels/gemm.h"

namespace peftrun::cpu {

template <typename T>
void lora_linear_forward(const LoraLinearArgs<T>& a, const T* x, T* y) {
  const std::size_t n_in = static_cast<std::size_t>(a.n) * a.in;
  // y = x W^T (+ bias): seed y with the bias rows and let GEMM accumulate (beta = 1) so the bias
  // costs no extra pass over y.
  T beta = T(0);
  if (a.bias) {
    for (int i = 0; i < a.n; ++i) {
      T* yr = y + static_cast<std::size_t>(i) * a.out;  // [out]
      for (int j = 0; j < a.out; ++j) yr[j] = a.bias[j];
    }
    beta = T(1);
  }
  gemm(Trans::kNo, Trans::kYes, a.n, a.out, a.in, T(1), x, a.in, a.W, a.in, beta, y, a.out);

  // drop(x): [n, in], kept in a.x_drop because backward needs it for dA.
  const T* xin = x;
  if (a.keep) {
    for (std::size_t i = 0; i < n_in; ++i) a.x_drop[i] = a.keep[i] ? x[i] * a.keep_scale : T(0);
    xin = a.x_drop;
  }
  // xa = drop(x) A^T: [n, r]
  gemm(Trans::kNo, Trans::kYes, a.n, a.r, a.in, T(1), xin, a.in, a.A, a.in, T(0), a.xa, a.r);
  // y += s * xa B^T
  gemm(Trans::kNo, Trans::kYes, a.n, a.out, a.r, a.scale, a.xa, a.r, a.B, a.r, T(1), y, a.out);
}

template <typename T>
void lora_linear_backward(const LoraLinearArgs<T>& a, const T* x, const T* dy, T* dx, T* dA, T* dB,
                          T* dxa) {
  const T* xin = a.keep ? a.x_drop : x;  // drop(x) as used by forward: [n, in]
  // dB += s * dy^T xa : [out, r]
  gemm(Trans::kYes, Trans::kNo, a.out, a.r, a.n, a.scale, dy, a.out, a.xa, a.r, T(1), dB, a.r);
  // dxa = s * dy B : [n, r]
  gemm(Trans::kNo, Trans::kNo, a.n, a.r, a.out, a.scale, dy, a.out, a.B, a.r, T(0), dxa, a.r);
  // dA += dxa^T drop(x) : [r, in]
  gemm(Trans::kYes, Trans::kNo, a.r, a.in, a.n, T(1), dxa, a.r, xin, a.in, T(1), dA, a.in);
  if (!dx) return;
  // dx = dy W + d drop(x)/dx applied to (dxa A). With dropout that Jacobian is the diagonal
  // keep * keep_scale, so compute dxa A straight into dx, mask it in place, then let the base
  // GEMM accumulate on top (beta = 1): no [n, in] temporary is needed.
  if (a.keep) {
    gemm(Trans::kNo, Trans::kNo, a.n, a.in, a.r, T(1), dxa, a.r, a.A, a.in, T(0), dx, a.in);
    const std::size_t n_in = static_cast<std::size_t>(a.n) * a.in;
    for (std::size_t i = 0; i < n_in; ++i) dx[i] = a.keep[i] ? dx[i] * a.keep_scale : T(0);
    gemm(Trans::kNo, Trans::kNo, a.n, a.in, a.out, T(1), dy, a.out, a.W, a.in, T(1), dx, a.in);
  } else {
    gemm(Trans::kNo, Trans::kNo, a.n, a.in, a.out, T(1), dy, a.out, a.W, a.in, T(0), dx, a.in);
    gemm(Trans::kNo, Trans::kNo, a.n, a.in, a.r, T(1), dxa, a.r, a.A, a.in, T(1), dx, a.in);
  }
}

template void lora_linear_forward<float>(const LoraLinearArgs<float>&, const float*, float*);
template void lora_linear_forward<double>(const LoraLinearArgs<double>&, const double*, double*);
template void lora_linear_backward<float>(const LoraLinearArgs<float>&, const float*, const float*,
                                          float*, float*, float*, float*);
template void lora_linear_backward<double>(const LoraLinearArgs<double>&, const double*,
                                           const double*, double*, double*, double*, double*);

}  // namespace peftrun::cpu
