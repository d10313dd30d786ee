// AdamW and the gradient-norm reduction on the GPU: the kernels of adamw_blocks.h launched by
// CudaLauncher.
#include "kernels/adamw.h"
#include "kernels/adamw_blocks.h"
#include "kernels/cuda_launch.cuh"

namespace peftrun::cuda {

void adamw_step(float* params, const float* grads, float* m, float* v, std::size_t n,
                const AdamWHyper& h, Stream stream) {
  blocks::launch_adamw_step(CudaLauncher(stream), params, grads, m, v, n, adamw_scalars(h));
}

std::size_t sum_squares_workspace_bytes(std::size_t n) {
  return static_cast<std::size_t>(blocks::sum_squares_blocks(n)) * sizeof(double);
}

void sum_squares(const float* x, std::size_t n, double* result, void* work, Stream stream) {
  blocks::launch_sum_squares(CudaLauncher(stream), x, n, result, static_cast<double*>(work));
}

}  // namespace peftrun::cuda
