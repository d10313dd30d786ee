// The CudaLauncher of the emulated-device build (PEFTRUN_CUDA=EMULATE): every launch of the
// CUDA backend runs in the block emulator, synchronously, on the calling thread. Streams are
// accepted and ignored (everything is in program order), so this build checks what the
// backend computes and how it uses memory, not what overlaps on a real GPU.
//
// PEFTRUN_EMULATION_SCHEDULE=in-order|reversed|shuffled picks the order in which the threads
// of a block run between barriers (default in-order): another order exposes a missing barrier.
#pragma once

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/block_context.h"
#include "kernels/cuda_memory.h"
#include "kernels/emulated/block_emulator.h"

namespace peftrun::cuda {

inline emu::Schedule emulation_schedule() {
  static const emu::Schedule schedule = [] {
    const char* v = std::getenv("PEFTRUN_EMULATION_SCHEDULE");
    if (!v || !*v || std::strcmp(v, "in-order") == 0) return emu::Schedule::kInOrder;
    if (std::strcmp(v, "reversed") == 0) return emu::Schedule::kReversed;
    if (std::strcmp(v, "shuffled") == 0) return emu::Schedule::kShuffled;
    throw std::invalid_argument(std::string("PEFTRUN_EMULATION_SCHEDULE: '") + v +
                                "' is not one of in-order, reversed, shuffled");
  }();
  return schedule;
}

class CudaLauncher {
 public:
  explicit CudaLauncher(Stream) {}

  template <class K>
  void operator()(const char* name, const LaunchGeometry& g, const K& kernel) const {
    const emu::EmulatedLauncher launch{emulation_schedule()};
    launch(name, g, kernel);
  }
};

}  // namespace peftrun::cuda
