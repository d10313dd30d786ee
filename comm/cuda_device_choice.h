// Which CUDA device a GPU rank uses: its local rank (the index among the ranks on its node), so
// `mpirun --map-by ppr:8:node` puts ranks 0..7 of each node on GPUs 0..7. Pure logic, so it is
// tested without a device; NcclCommunicator::create applies it.
#pragma once

#include <string>

namespace peftrun {

struct CudaDeviceChoice {
  int device = -1;    // the device to use; -1 when there is none
  std::string error;  // why not, naming the numbers (empty when device >= 0)
  bool ok() const { return device >= 0; }
};

// - device_count <= 0: an error (with `no_device_note`, e.g. the driver's message).
// - local_rank < device_count: device local_rank.
// - exactly one visible device and CUDA_VISIBLE_DEVICES set (`cuda_visible_devices` non-null and
//   non-empty): device 0, since the launcher gave this rank a GPU of its own (Slurm's
//   --gpus-per-task=1 does this, leaving SLURM_LOCALID at 0..n-1).
// - otherwise an error naming the local rank, the device count and CUDA_VISIBLE_DEVICES: more
//   ranks were started on this node than it has GPUs.
CudaDeviceChoice choose_cuda_device(int local_rank, int device_count,
                                    const char* cuda_visible_devices,
                                    const std::string& no_device_note = {});

}  // namespace peftrun
