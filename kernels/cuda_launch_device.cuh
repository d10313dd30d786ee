// The GPU's CudaLauncher (see cuda_launch.cuh, which picks it): one generic __global__
// function per kernel functor type, launched with the functor's LaunchGeometry. The block
// emulator (kernels/emulated/block_emulator.h) implements the same launcher interface, so the
// host-side launch code of every op (shape checks, geometry, dispatch) is shared and tested
// without a GPU.
#pragma once

#include <stdexcept>
#include <string>

#include "kernels/block_context.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_memory.h"

namespace peftrun::cuda {

// K::kMaxThreads bounds the block size, so the compiler may give each thread the registers that
// size allows (and a launch with more threads is refused below rather than failing on the GPU).
template <class K>
__global__ void __launch_bounds__(K::kMaxThreads) run_block(const K kernel) {
  extern __shared__ __align__(128) unsigned char peftrun_smem[];  // tensor_core.h: 32
  // The size is only checked by the emulator; on the device the launch provides what the
  // geometry asked for.
  kernel(CudaBlock{}, Span<unsigned char>{peftrun_smem, ~std::size_t(0)});
}

class CudaLauncher {
 public:
  explicit CudaLauncher(Stream stream) : stream_(stream) {}

  template <class K>
  void operator()(const char* name, const LaunchGeometry& g, const K& kernel) const {
    if (g.empty()) return;  // nothing to do (e.g. zero rows): launching would be an error
    if (g.threads > K::kMaxThreads || g.grid_y > kMaxGridYZ || g.grid_z > kMaxGridYZ) {
      throw std::invalid_argument(std::string(name) + ": launch geometry outside CUDA's limits");
    }
    if (g.smem_bytes > kDefaultSharedBytes) {
      int device = 0, optin = 0;
      PEFTRUN_CUDA_CHECK(cudaGetDevice(&device));
      PEFTRUN_CUDA_CHECK(
          cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
      if (g.smem_bytes > static_cast<std::size_t>(optin)) {
        throw std::invalid_argument(std::string(name) + " needs " + std::to_string(g.smem_bytes) +
                                    " bytes of shared memory per block; this GPU allows " +
                                    std::to_string(optin));
      }
      PEFTRUN_CUDA_CHECK(cudaFuncSetAttribute(run_block<K>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(g.smem_bytes)));
    }
    run_block<K><<<dim3(static_cast<unsigned>(g.grid_x), static_cast<unsigned>(g.grid_y),
                        static_cast<unsigned>(g.grid_z)),
                   static_cast<unsigned>(g.threads), g.smem_bytes, stream_>>>(kernel);
    const cudaError_t err = cudaGetLastError();  // a bad configuration, named by the op
    if (err != cudaSuccess) throw_cuda_error(err, name, __FILE__, __LINE__);
  }

 private:
  Stream stream_;
};

}  // namespace peftrun::cuda
