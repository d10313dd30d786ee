// The one device allocation behind an ArenaPlan (runtime/model/arena_plan.h): every planned
// region is a pointer into it. Header-only over cuda::DeviceBuffer, so only CUDA builds that
// construct one link against the device runtime.
#pragma once

#include <cstddef>

#include "kernels/cuda_memory.h"
#include "runtime/model/arena_plan.h"

namespace peftrun {

class DeviceArena {
 public:
  DeviceArena() = default;
  // One cudaMalloc of plan.total_bytes() (cudaMalloc returns 256-byte aligned memory, so every
  // region keeps the plan's alignment).
  explicit DeviceArena(const ArenaPlan& plan) : memory_(plan.total_bytes()) {}

  // The region's memory, nullptr for an empty slot.
  template <typename T = void>
  T* at(const ArenaSlot& slot) const {
    if (slot.empty()) return nullptr;
    return reinterpret_cast<T*>(const_cast<unsigned char*>(memory_.data()) + slot.offset);
  }
  std::size_t bytes() const { return memory_.bytes(); }

 private:
  cuda::DeviceBuffer<unsigned char> memory_;
};

}  // namespace peftrun
