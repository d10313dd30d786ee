#include <cstddef>

#include "kernels/convert.h"
#include "kernels/cuda_check.h"
#include "kernels/dtype_cuda.cuh"

namespace peftrun::cuda {
namespace {

template <typename S, typename D>
__global__ void convert_kernel(const S* src, D* dst, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    dst[i] = from_f32<D>(to_f32(src[i]));
  }
}

template <typename D>
__global__ void cast_rows_scaled_kernel(const float* src, const float* row_scale, int cols,
                                        std::size_t n, D* dst) {
  for (std::size_t e = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; e < n;
       e += std::size_t(gridDim.x) * blockDim.x) {
    const float v = row_scale ? src[e] * row_scale[e / static_cast<std::size_t>(cols)] : src[e];
    dst[e] = from_f32<D>(v);
  }
}

}  // namespace

void convert(const void* src, DType src_type, void* dst, DType dst_type, std::size_t n,
             Stream stream) {
  if (n == 0) return;
  dispatch_storage(src_type, [&](auto s_tag) {
    using S = typename decltype(s_tag)::type;
    dispatch_storage(dst_type, [&](auto d_tag) {
      using D = typename decltype(d_tag)::type;
      convert_kernel<S, D><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
          static_cast<const S*>(src), static_cast<D*>(dst), n);
    });
  });
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

void cast_rows_scaled(const float* src, const float* row_scale, int rows, int cols, DType dst_type,
                      void* dst, Stream stream) {
  if (rows <= 0 || cols <= 0) return;
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  dispatch_storage(dst_type, [&](auto tag) {
    using D = typename decltype(tag)::type;
    cast_rows_scaled_kernel<D><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
        src, row_scale, cols, n, static_cast<D*>(dst));
  });
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

}  // namespace peftrun::cuda
