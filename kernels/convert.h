// Storage conversions on the device (the host has half_to_float / float_to_bf16 in half.h and
// dtype.h, with the same round-to-nearest-even):
//   convert          any DType -> any DType, element-wise (e.g. staging the fp16 base as bf16)
//   cast_rows_scaled fp32 [rows, cols] -> DType, row i multiplied by row_scale[i] first
//                    (adapter params into a matmul's input type: A and B as they are, AdaLoRA's
//                    E * A, DoRA's diag(m / n) B)
#pragma once

#include <cstddef>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun::cuda {

// dst[i] = src[i] converted (through fp32) for i < n. src and dst must not overlap.
void convert(const void* src, DType src_type, void* dst, DType dst_type, std::size_t n,
             Stream stream);

// dst[i, j] = round(src[i, j] * row_scale[i]) (row_scale nullptr = 1: a plain cast); the
// product is one fp32 multiplication, as the CPU kernels compute it. Contiguous rows.
void cast_rows_scaled(const float* src, const float* row_scale, int rows, int cols, DType dst_type,
                      void* dst, Stream stream);

}  // namespace peftrun::cuda
