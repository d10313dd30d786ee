// The gated MLP's activation on the GPU: the kernels of glu_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/glu.h"
#include "kernels/glu_blocks.h"

namespace peftrun::cuda {

void glu_forward(GluActivation act, const void* gate, const void* up, void* out, std::size_t n,
                 DType dtype, Stream stream) {
  blocks::launch_glu_forward(CudaLauncher(stream), act, gate, up, out, n, dtype);
}

void glu_backward(GluActivation act, const void* dout, const void* gate, const void* up,
                  void* dgate, void* dup, std::size_t n, DType dtype, Stream stream) {
  blocks::launch_glu_backward(CudaLauncher(stream), act, dout, gate, up, dgate, dup, n, dtype);
}

}  // namespace peftrun::cuda
