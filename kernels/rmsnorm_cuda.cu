// RMSNorm on the GPU: the kernels of rmsnorm_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/rmsnorm.h"
#include "kernels/rmsnorm_blocks.h"

namespace peftrun::cuda {

void rmsnorm_forward(const void* x, const half_bits* weight, float weight_offset, void* y,
                     float* rstd, int rows, int dim, float eps, DType dtype, Stream stream) {
  blocks::launch_rmsnorm_forward(CudaLauncher(stream), x, weight, weight_offset, y, rstd, rows, dim,
                                 eps, dtype);
}

void rmsnorm_backward(const void* dy, const void* x, const half_bits* weight, float weight_offset,
                      const float* rstd, void* dx, int rows, int dim, DType dtype, Stream stream) {
  blocks::launch_rmsnorm_backward(CudaLauncher(stream), dy, x, weight, weight_offset, rstd, dx,
                                  rows, dim, dtype);
}

}  // namespace peftrun::cuda
