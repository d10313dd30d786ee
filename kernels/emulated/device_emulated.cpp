// kernels/device.h in the emulated-device build: one device, always present, so backend
// choice, the trainer and tests/gpu/ take their CUDA paths on a machine without a GPU.
#include "kernels/device.h"

namespace peftrun {

DeviceInventory query_devices() {
  DeviceInventory inv;
  inv.cuda_compiled = true;
  inv.cuda_devices = 1;
  inv.note = "emulated CUDA device (PEFTRUN_CUDA=EMULATE)";
  return inv;
}

std::string cuda_device_description(int device) {
  if (device != 0) return "";
  return "emulated CUDA device (kernels in the CPU block emulator, cuBLASLt by a host reference)";
}

}  // namespace peftrun
