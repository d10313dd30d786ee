// Small element-wise ops the device model needs between the big kernels:
//
//   add_inplace        y[i] += x[i]                  the residual adds of a block and the sums of
//                                                    input gradients in backward (dh += dtmp)
//   scale              y[i] = alpha x[i]             Granite's residual_multiplier on a block's
//                                                    output and on its gradient (y may be x)
//   zero_masked_rows   data[offsets[g] + k] = 0      AdaLoRA's pruned singular values: E of
//                      where mask[g * per_group + k]  module g, entry k, zeroed in the flat params
//                      == 0                          (AdaLoraAllocator::apply_mask's rule)
//
// The CPU twins run the same per-element formula; the CUDA kernels are block functors
// (kernels/elementwise_blocks.h), so the CPU block emulator runs them too.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun::cpu {

// y[i] = y[i] + x[i] for i < n (y and x must not overlap partially; y == x doubles y).
template <typename T>
void add_inplace(T* y, const T* x, std::size_t n);

// y[i] = alpha * x[i] for i < n (y == x scales in place).
template <typename T>
void scale(T* y, const T* x, T alpha, std::size_t n);

// For g < groups, k < per_group: data[offsets[g] + k] = 0 when mask[g * per_group + k] == 0.
// Entries the mask keeps are not touched (a kept NaN stays NaN).
void zero_masked_rows(float* data, const std::uint64_t* offsets, const float* mask, int groups,
                      int per_group);

}  // namespace peftrun::cpu

namespace peftrun::cuda {

// y, x: n device elements of `dtype`; the sum is computed in fp32 and rounded once.
void add_inplace(void* y, const void* x, std::size_t n, DType dtype, Stream stream);

// y = alpha * x over n device elements of `dtype` (y may be x), in fp32, rounded once.
void scale(void* y, const void* x, float alpha, std::size_t n, DType dtype, Stream stream);

// Device twin of cpu::zero_masked_rows: offsets [groups] and mask [groups * per_group] are
// device arrays, data the flat device buffer they index.
void zero_masked_rows(float* data, const std::uint64_t* offsets, const float* mask, int groups,
                      int per_group, Stream stream);

}  // namespace peftrun::cuda
