#include <cstddef>
#include <cstdint>

#include "kernels/elementwise.h"
#include "kernels/parallel.h"

namespace peftrun::cpu {

template <typename T>
void add_inplace(T* y, const T* x, std::size_t n) {
  // Memory-bound, but one core cannot pull the bandwidth two can (the residual adds of a step).
  parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) y[i] += x[i];
  });
}

template <typename T>
void scale(T* y, const T* x, T alpha, std::size_t n) {
  parallel_for(n, min_part_for(1), [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) y[i] = alpha * x[i];
  });
}

void zero_masked_rows(float* data, const std::uint64_t* offsets, const float* mask, int groups,
                      int per_group) {
  for (int g = 0; g < groups; ++g) {
    for (int k = 0; k < per_group; ++k) {
      if (mask[std::size_t(g) * per_group + k] == 0.0f) data[offsets[g] + std::size_t(k)] = 0.0f;
    }
  }
}

template void add_inplace<float>(float*, const float*, std::size_t);
template void add_inplace<double>(double*, const double*, std::size_t);
template void scale<float>(float*, const float*, float, std::size_t);
template void scale<double>(double*, const double*, double, std::size_t);

}  // namespace peftrun::cpu
