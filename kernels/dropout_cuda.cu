#include <cstddef>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/dropout.h"
#include "kernels/dtype_cuda.cuh"
#include "kernels/exact_math.h"

namespace peftrun::cuda {
namespace {

__global__ void keep_mask_kernel(std::uint64_t key, float p, std::size_t n, std::uint8_t* keep) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    keep[i] = dropout_keep(key, i, p);
  }
}

template <typename S>
__global__ void apply_dropout_kernel(const S* x, const std::uint8_t* keep, float keep_scale,
                                     std::size_t n, S* x_drop, S* x_rest) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    // mul_rn: d is the rounded product the CPU computes, never fused into v - d.
    const float v = to_f32(x[i]);
    const float d = keep[i] ? mul_rn(v, keep_scale) : 0.0f;
    x_drop[i] = from_f32<S>(d);
    if (x_rest) x_rest[i] = from_f32<S>(v - d);
  }
}

template <typename S>
__global__ void mask_by_keep_kernel(S* g, const std::uint8_t* keep, float keep_scale,
                                    std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    g[i] = keep[i] ? from_f32<S>(mul_rn(to_f32(g[i]), keep_scale)) : from_f32<S>(0.0f);
  }
}

}  // namespace

void dropout_keep_mask(std::uint64_t key, float p, std::size_t n, std::uint8_t* keep,
                       Stream stream) {
  if (n == 0) return;
  keep_mask_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(key, p, n, keep);
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

void apply_dropout(const void* x, const std::uint8_t* keep, float keep_scale, std::size_t n,
                   DType type, void* x_drop, void* x_rest, Stream stream) {
  if (n == 0) return;
  dispatch_storage(type, [&](auto tag) {
    using S = typename decltype(tag)::type;
    apply_dropout_kernel<S><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
        static_cast<const S*>(x), keep, keep_scale, n, static_cast<S*>(x_drop),
        static_cast<S*>(x_rest));
  });
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

void mask_by_keep(void* g, const std::uint8_t* keep, float keep_scale, std::size_t n, DType type,
                  Stream stream) {
  if (n == 0) return;
  dispatch_storage(type, [&](auto tag) {
    using S = typename decltype(tag)::type;
    mask_by_keep_kernel<S><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
        static_cast<S*>(g), keep, keep_scale, n);
  });
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

}  // namespace peftrun::cuda
