#include "kernels/device.h"

#ifndef PEFTRUN_WITH_CUDA
namespace peftrun {

DeviceInventory query_devices() {
  DeviceInventory inv;
  inv.note = "built without CUDA (PEFTRUN_CUDA=OFF or no toolkit found)";
  return inv;
}

std::string cuda_device_description(int) {
  return "";
}

}  // namespace peftrun
#endif
