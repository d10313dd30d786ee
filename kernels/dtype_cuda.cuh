// Device-side view of kernels/dtype.h, for .cu files only: the CUDA storage type of each DType,
// fp32 load/store with round-to-nearest-even (the same rounding as float_to_half /
// float_to_bf16 on the host), a host-side dispatch from a runtime DType to a kernel template,
// and the launch-size helper every element-wise kernel uses.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <library_types.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>

#include "kernels/dtype.h"

namespace peftrun::cuda {

__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename S>
__device__ __forceinline__ S from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// A tag carrying a storage type, so host code can turn a runtime DType into a template argument:
//   dispatch_storage(t, [&](auto tag) { using S = typename decltype(tag)::type; ... });
template <typename S>
struct StorageTag {
  using type = S;
};

template <typename F>
void dispatch_storage(DType t, F&& f) {
  switch (t) {
    case DType::kF32:
      f(StorageTag<float>{});
      return;
    case DType::kF16:
      f(StorageTag<__half>{});
      return;
    case DType::kBF16:
      f(StorageTag<__nv_bfloat16>{});
      return;
  }
  throw std::invalid_argument("unknown DType");
}

inline cudaDataType_t cuda_data_type(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
  }
  throw std::invalid_argument("unknown DType");
}

}  // namespace peftrun::cuda
