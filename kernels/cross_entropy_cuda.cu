// Fused cross-entropy on the GPU: the kernels of cross_entropy_blocks.h launched by CudaLauncher.
#include "kernels/cross_entropy.h"
#include "kernels/cross_entropy_blocks.h"
#include "kernels/cuda_launch.cuh"

namespace peftrun::cuda {

void cross_entropy_forward_backward(const void* logits, const std::int32_t* targets, void* dlogits,
                                    float* row_loss, double* loss_sum, int n, int V,
                                    float grad_scale, float softcap, DType dtype, Stream stream) {
  blocks::launch_cross_entropy_forward_backward(CudaLauncher(stream), logits, targets, dlogits,
                                                row_loss, loss_sum, n, V, grad_scale, softcap,
                                                dtype);
}

}  // namespace peftrun::cuda
