#include "kernels/swiglu.h"

#include "kernels/activations.h"

namespace peftrun::cpu {

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = swiglu(gate[i], up[i]);
}

template <typename T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) swiglu_grad(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
}

template void swiglu_forward<float>(const float*, const float*, float*, std::size_t);
template void swiglu_forward<double>(const double*, const double*, double*, std::size_t);
template void swiglu_backward<float>(const float*, const float*, const float*, float*, float*,
                                     std::size_t);
template void swiglu_backward<double>(const double*, const double*, const double*, double*, double*,
                                      std::size_t);

}  // namespace peftrun::cpu
