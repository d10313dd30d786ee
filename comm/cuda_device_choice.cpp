#include "comm/cuda_device_choice.h"

namespace peftrun {

CudaDeviceChoice choose_cuda_device(int local_rank, int device_count,
                                    const char* cuda_visible_devices,
                                    const std::string& no_device_note) {
  CudaDeviceChoice c;
  const bool visible_set = cuda_visible_devices != nullptr && cuda_visible_devices[0] != '\0';
  const std::string visible = visible_set
                                  ? std::string("CUDA_VISIBLE_DEVICES=") + cuda_visible_devices
                                  : std::string("CUDA_VISIBLE_DEVICES unset");
  if (device_count <= 0) {
    c.error = "no usable CUDA device (" +
              (no_device_note.empty() ? visible : no_device_note + "; " + visible) +
              "): the NCCL backend needs one GPU per rank";
  } else if (local_rank < 0) {
    c.error = "local rank " + std::to_string(local_rank) + " is not a valid index";
  } else if (local_rank < device_count) {
    c.device = local_rank;
  } else if (device_count == 1 && visible_set) {
    c.device = 0;
  } else {
    c.error = "local rank " + std::to_string(local_rank) + " needs CUDA device " +
              std::to_string(local_rank) + ", but only " + std::to_string(device_count) +
              " device" + (device_count == 1 ? " is" : "s are") + " visible (" + visible +
              "): start at most " + std::to_string(device_count) +
              " ranks per node (e.g. mpirun --map-by ppr:" + std::to_string(device_count) +
              ":node), or give each rank its own GPU through CUDA_VISIBLE_DEVICES";
  }
  return c;
}

}  // namespace peftrun
