// Embedding lookup on the GPU: the kernel of embedding_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/embedding.h"
#include "kernels/embedding_blocks.h"

namespace peftrun::cuda {

void embedding_forward(const std::int32_t* tokens, const half_bits* table, void* out, int n,
                       int dim, int vocab, float scale, DType out_dtype, Stream stream) {
  blocks::launch_embedding_forward(CudaLauncher(stream), tokens, table, out, n, dim, vocab, scale,
                                   out_dtype);
}

}  // namespace peftrun::cuda
