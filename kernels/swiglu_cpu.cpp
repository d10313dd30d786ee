#include "kernels/swiglu.h"

#include "kernels/activations.h"
#include "kernels/parallel.h"

namespace peftrun::cpu {

// Element-wise, so split over the kernel threads (parallel.h): one exp per element is ~10% of
// a CPU step when it runs on one core while BLAS's others idle.
template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, std::size_t n) {
  parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) out[i] = swiglu(gate[i], up[i]);
  });
}

template <typename T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, std::size_t n) {
  parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      swiglu_grad(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
    }
  });
}

template void swiglu_forward<float>(const float*, const float*, float*, std::size_t);
template void swiglu_forward<double>(const double*, const double*, double*, std::size_t);
template void swiglu_backward<float>(const float*, const float*, const float*, float*, float*,
                                     std::size_t);
template void swiglu_backward<double>(const double*, const double*, const double*, double*, double*,
                                      std::size_t);

}  // namespace peftrun::cpu
