// RMSNorm over the last dimension (LLaMA): y = x / sqrt(mean(x^2) + eps) * weight; with
// weight_offset 1 the scale is (1 + weight), as Gemma's norms (0 for every other model).
//
// x, y, dy, dx: [rows, dim]; weight: [dim] (frozen); rstd: [rows], saved by forward for backward.
// The norm weight is part of the frozen base, so backward produces only dx (overwritten).
#pragma once

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"
#include "kernels/half.h"

namespace peftrun::cpu {

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T weight_offset, T* y, T* rstd, int rows, int dim,
                     T eps);

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, T weight_offset, const T* rstd,
                      T* dx, int rows, int dim);

}  // namespace peftrun::cpu

// CUDA twin (rmsnorm_cuda.cu, kernels in rmsnorm_blocks.h): x, y, dy, dx stored in `dtype`, the
// frozen weight in fp16 (as the base layer buffer holds it), rstd [rows] in fp32; math in fp32
// (rmsnorm_math.h). y may alias x and dx may alias dy.
namespace peftrun::cuda {

void rmsnorm_forward(const void* x, const half_bits* weight, float weight_offset, void* y,
                     float* rstd, int rows, int dim, float eps, DType dtype, Stream stream);

void rmsnorm_backward(const void* dy, const void* x, const half_bits* weight, float weight_offset,
                      const float* rstd, void* dx, int rows, int dim, DType dtype, Stream stream);

}  // namespace peftrun::cuda
