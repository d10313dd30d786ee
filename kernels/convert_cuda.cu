// Storage conversions on the GPU: the kernels of convert_blocks.h launched by CudaLauncher.
#include "kernels/convert.h"
#include "kernels/convert_blocks.h"
#include "kernels/cuda_launch.cuh"

namespace peftrun::cuda {

void convert(const void* src, DType src_type, void* dst, DType dst_type, std::size_t n,
             Stream stream) {
  blocks::launch_convert(CudaLauncher(stream), src, src_type, dst, dst_type, n);
}

void cast_rows_scaled(const float* src, const float* row_scale, int rows, int cols, DType dst_type,
                      void* dst, Stream stream) {
  blocks::launch_cast_rows_scaled(CudaLauncher(stream), src, row_scale, rows, cols, dst_type, dst);
}

}  // namespace peftrun::cuda
