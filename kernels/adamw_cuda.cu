// AdamW and the gradient-norm reduction over the flat fp32 buffers on the GPU. adamw_element is
// the CPU's formula with individually rounded operations, so the update is bit-identical.
#include <algorithm>
#include <cstddef>

#include "kernels/adamw.h"
#include "kernels/cuda_check.h"
#include "kernels/dtype_cuda.cuh"
#include "kernels/reduce_cuda.cuh"

namespace peftrun::cuda {
namespace {

constexpr int kReduceThreads = 256;
constexpr std::size_t kMaxReduceBlocks = 1024;

__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, std::size_t n,
                             AdamWScalars s) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    adamw_element(params[i], grads[i], m[i], v[i], s);
  }
}

__global__ void sum_squares_partial_kernel(const float* x, std::size_t n, double* partial) {
  __shared__ double part[kReduceThreads];
  double acc = 0.0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const double d = x[i];
    acc += d * d;  // exact: a float's square fits a double's mantissa
  }
  part[threadIdx.x] = acc;
  block_sum<kReduceThreads>(part);
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

__global__ void sum_partials_kernel(const double* partial, int count, double* result) {
  __shared__ double part[kReduceThreads];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += kReduceThreads) acc += partial[i];
  part[threadIdx.x] = acc;
  block_sum<kReduceThreads>(part);
  if (threadIdx.x == 0) *result = part[0];
}

unsigned reduce_blocks(std::size_t n) {
  const std::size_t b = (n + kReduceThreads - 1) / kReduceThreads;
  return static_cast<unsigned>(std::clamp<std::size_t>(b, 1, kMaxReduceBlocks));
}

}  // namespace

void adamw_step(float* params, const float* grads, float* m, float* v, std::size_t n,
                const AdamWHyper& h, Stream stream) {
  if (n == 0) return;
  adamw_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(params, grads, m, v, n,
                                                                          adamw_scalars(h));
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

std::size_t sum_squares_workspace_bytes(std::size_t n) {
  return reduce_blocks(n) * sizeof(double);
}

void sum_squares(const float* x, std::size_t n, double* result, void* work, Stream stream) {
  const unsigned blocks = reduce_blocks(n);
  double* partial = static_cast<double*>(work);
  sum_squares_partial_kernel<<<blocks, kReduceThreads, 0, stream>>>(x, n, partial);
  PEFTRUN_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, kReduceThreads, 0, stream>>>(partial, static_cast<int>(blocks), result);
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

}  // namespace peftrun::cuda
