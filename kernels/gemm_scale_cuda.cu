// scale_columns (kernels/gemm.h), the fused fallback for matmuls without an alpha vector:
// gemm_blocks.h's kernel launched by CudaLauncher. Apart from gemm_cuda.cu because the
// emulated-device build, which replaces cuBLASLt, runs it too.
#include "kernels/cuda_launch.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_blocks.h"

namespace peftrun::cuda {

void scale_columns(const float* Z, void* D, DType d_type, int rows, int cols, int ldd,
                   const float* scale, Stream stream) {
  blocks::launch_scale_columns(CudaLauncher(stream), Z, D, d_type, rows, cols, ldd, scale);
}

}  // namespace peftrun::cuda
