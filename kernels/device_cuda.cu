#include <cuda_runtime.h>

#include "kernels/device.h"

namespace peftrun {

DeviceInventory query_devices() {
  DeviceInventory inv;
  inv.cuda_compiled = true;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    inv.note = std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    (void)cudaGetLastError();  // clear the sticky error so later calls start clean
    return inv;
  }
  inv.cuda_devices = count;
  if (count == 0) inv.note = "no CUDA device present";
  return inv;
}

}  // namespace peftrun
