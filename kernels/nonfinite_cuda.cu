// Non-finite detection on the GPU: the kernels of nonfinite_blocks.h launched by CudaLauncher.
#include "kernels/cuda_launch.cuh"
#include "kernels/nonfinite.h"
#include "kernels/nonfinite_blocks.h"

namespace peftrun::cuda {

void nonfinite_reset(NonfiniteReport* report, Stream stream) {
  blocks::launch_nonfinite_reset(CudaLauncher(stream), report);
}

void nonfinite_scan(const void* x, DType type, std::size_t n, NonfiniteReport* report,
                    Stream stream) {
  blocks::launch_nonfinite_scan(CudaLauncher(stream), x, type, n, report);
}

}  // namespace peftrun::cuda
