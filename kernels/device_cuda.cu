#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/device.h"

namespace peftrun {

// Asked once per process (the driver's answer does not change while we run, and a failing
// runtime initialisation is not free): main, the trainer and the tests share the answer.
DeviceInventory query_devices() {
  static const DeviceInventory inventory = [] {
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
  }();
  return inventory;
}

std::string cuda_device_description(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return "";
  }
  char buf[320];
  std::snprintf(buf, sizeof(buf), "%s (sm_%d%d, %.1f GiB)", prop.name, prop.major, prop.minor,
                double(prop.totalGlobalMem) / double(1ull << 30));
  return buf;
}

}  // namespace peftrun
