// The element-wise ops on the GPU: the kernels of elementwise_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/elementwise.h"
#include "kernels/elementwise_blocks.h"

namespace peftrun::cuda {

void add_inplace(void* y, const void* x, std::size_t n, DType dtype, Stream stream) {
  blocks::launch_add_inplace(CudaLauncher(stream), y, x, n, dtype);
}

void scale(void* y, const void* x, float alpha, std::size_t n, DType dtype, Stream stream) {
  blocks::launch_scale(CudaLauncher(stream), y, x, alpha, n, dtype);
}

void zero_masked_rows(float* data, const std::uint64_t* offsets, const float* mask, int groups,
                      int per_group, Stream stream) {
  // The device does not bounds-check Spans, so the buffer length only matters to the emulator.
  blocks::launch_zero_masked_rows(CudaLauncher(stream), data, ~std::size_t(0), offsets, mask,
                                  groups, per_group);
}

}  // namespace peftrun::cuda
