#include "kernels/glu.h"

#include <type_traits>

#include "kernels/activations.h"
#include "kernels/parallel.h"

namespace peftrun::cpu {
namespace {

// The activation as a compile-time constant, so each loop body has no branch on it and GCC
// vectorises it (the exps are kernels/exp_math.h's adds and multiplies).
template <typename F>
void with_activation(GluActivation act, const F& fn) {
  if (act == GluActivation::kSilu) {
    fn(std::integral_constant<GluActivation, GluActivation::kSilu>{});
  } else {
    fn(std::integral_constant<GluActivation, GluActivation::kGeluTanh>{});
  }
}

}  // namespace

// Element-wise, so split over the kernel threads (parallel.h): one exp per element is ~10% of
// a CPU step when it runs on one core while BLAS's others idle.
template <typename T>
void glu_forward(GluActivation act, const T* gate, const T* up, T* out, std::size_t n) {
  with_activation(act, [&](auto a) {
    parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i) out[i] = glu(a(), gate[i], up[i]);
    });
  });
}

template <typename T>
void glu_backward(GluActivation act, const T* dout, const T* gate, const T* up, T* dgate, T* dup,
                  std::size_t n) {
  with_activation(act, [&](auto a) {
    parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i) {
        glu_grad(a(), dout[i], gate[i], up[i], &dgate[i], &dup[i]);
      }
    });
  });
}

template void glu_forward<float>(GluActivation, const float*, const float*, float*, std::size_t);
template void glu_forward<double>(GluActivation, const double*, const double*, double*,
                                  std::size_t);
template void glu_backward<float>(GluActivation, const float*, const float*, const float*, float*,
                                  float*, std::size_t);
template void glu_backward<double>(GluActivation, const double*, const double*, const double*,
                                   double*, double*, std::size_t);

}  // namespace peftrun::cpu
