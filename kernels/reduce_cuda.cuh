// Block-wide tree sum for the .cu reductions (deterministic: a fixed pairing order).
#pragma once

namespace peftrun::cuda {

// part[0..Threads) summed into part[0]. Every thread of a Threads-wide block must call it after
// writing its own part[threadIdx.x]; it synchronises before and after.
template <int Threads>
__device__ void block_sum(double* part) {
  static_assert((Threads & (Threads - 1)) == 0, "block_sum needs a power-of-two block");
  for (int half = Threads / 2; half > 0; half /= 2) {
    __syncthreads();
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
  }
  __syncthreads();
}

}  // namespace peftrun::cuda
