// Dropout on the GPU: the kernels of dropout_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/dropout.h"
#include "kernels/dropout_blocks.h"

namespace peftrun::cuda {

void dropout_keep_mask(std::uint64_t key, float p, std::size_t n, std::uint8_t* keep,
                       Stream stream) {
  blocks::launch_dropout_keep_mask(CudaLauncher(stream), key, p, n, keep);
}

void apply_dropout(const void* x, const std::uint8_t* keep, float keep_scale, std::size_t n,
                   DType type, void* x_drop, void* x_rest, Stream stream) {
  blocks::launch_apply_dropout(CudaLauncher(stream), x, keep, keep_scale, n, type, x_drop, x_rest);
}

void mask_by_keep(void* g, const std::uint8_t* keep, float keep_scale, std::size_t n, DType type,
                  Stream stream) {
  blocks::launch_mask_by_keep(CudaLauncher(stream), g, keep, keep_scale, n, type);
}

}  // namespace peftrun::cuda
