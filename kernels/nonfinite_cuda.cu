#include <cstddef>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/dtype_cuda.cuh"
#include "kernels/nonfinite.h"

namespace peftrun::cuda {
namespace {

__global__ void reset_kernel(NonfiniteReport* report) {
  report->count = 0;
  report->first_index = ~std::uint64_t(0);
}

// Each block counts its hits in shared memory and touches the global report only when it saw
// one, so a clean buffer costs no atomics on global memory.
template <typename S>
__global__ void scan_kernel(const S* x, std::size_t n, NonfiniteReport* report) {
  __shared__ unsigned long long block_count;
  __shared__ unsigned long long block_first;
  if (threadIdx.x == 0) {
    block_count = 0;
    block_first = ~0ull;
  }
  __syncthreads();
  unsigned long long count = 0, first = ~0ull;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    if (!isfinite(to_f32(x[i]))) {
      if (count == 0) first = i;  // a thread's indices only grow
      ++count;
    }
  }
  if (count) {
    atomicAdd(&block_count, count);
    atomicMin(&block_first, first);
  }
  __syncthreads();
  if (threadIdx.x == 0 && block_count) {
    atomicAdd(reinterpret_cast<unsigned long long*>(&report->count), block_count);
    atomicMin(reinterpret_cast<unsigned long long*>(&report->first_index), block_first);
  }
}

}  // namespace

void nonfinite_reset(NonfiniteReport* report, Stream stream) {
  reset_kernel<<<1, 1, 0, stream>>>(report);
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

void nonfinite_scan(const void* x, DType type, std::size_t n, NonfiniteReport* report,
                    Stream stream) {
  if (n == 0) return;
  dispatch_storage(type, [&](auto tag) {
    using S = typename decltype(tag)::type;
    scan_kernel<S><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
        static_cast<const S*>(x), n, report);
  });
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

}  // namespace peftrun::cuda
