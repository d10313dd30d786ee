// SwiGLU on the GPU: the kernels of swiglu_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/swiglu.h"
#include "kernels/swiglu_blocks.h"

namespace peftrun::cuda {

void swiglu_forward(const void* gate, const void* up, void* out, std::size_t n, DType dtype,
                    Stream stream) {
  blocks::launch_swiglu_forward(CudaLauncher(stream), gate, up, out, n, dtype);
}

void swiglu_backward(const void* dout, const void* gate, const void* up, void* dgate, void* dup,
                     std::size_t n, DType dtype, Stream stream) {
  blocks::launch_swiglu_backward(CudaLauncher(stream), dout, gate, up, dgate, dup, n, dtype);
}

}  // namespace peftrun::cuda
