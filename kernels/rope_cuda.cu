// RoPE on the GPU: the kernel of rope_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/rope.h"
#include "kernels/rope_blocks.h"

namespace peftrun::cuda {

void rope_forward(void* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                  int rotary_dim, const float* inv_freq, float cos_sin_scale, DType dtype,
                  Stream stream) {
  blocks::launch_rope_forward(CudaLauncher(stream), x, pos, tokens, n_heads, head_dim, rotary_dim,
                              inv_freq, cos_sin_scale, dtype);
}

void rope_backward(void* dx, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                   int rotary_dim, const float* inv_freq, float cos_sin_scale, DType dtype,
                   Stream stream) {
  blocks::launch_rope_backward(CudaLauncher(stream), dx, pos, tokens, n_heads, head_dim, rotary_dim,
                               inv_freq, cos_sin_scale, dtype);
}

}  // namespace peftrun::cuda
