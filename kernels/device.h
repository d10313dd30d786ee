// Which compute devices this process can use. The CUDA build asks the driver; the CPU-only
// build always answers 0. A machine with the toolkit but no GPU (our CI) makes
// cudaGetDeviceCount fail ("driver version is insufficient"): that is "no device", not an error.
#pragma once

#include <string>

namespace peftrun {

struct DeviceInventory {
  bool cuda_compiled = false;  // the binary contains the CUDA backend
  int cuda_devices = 0;        // usable CUDA devices (0 when none or no driver)
  std::string note;            // why there are none, for the log
};

// Asked once per process; later calls return the first answer.
DeviceInventory query_devices();

// "NVIDIA H200 (sm_90, 139.8 GiB)" for the log; "" in a build without CUDA or on any error.
std::string cuda_device_description(int device);

}  // namespace peftrun
