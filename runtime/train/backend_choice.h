// Which backend trains: runtime.device (auto | cpu | cuda) and runtime.compute_dtype against
// what this process can use (kernels/device.h). Pure logic, tested without a GPU
// (tests/backend_choice_test.cpp).
//
//   cpu                    the CPU backend, fp32
//   cuda                   the CUDA backend; an error naming runtime.device when this build has
//                          no CUDA backend or no device is usable (exit code 1)
//   auto                   cuda when a device is usable, else the CPU (saying why)
//   compute_dtype auto     bf16 on cuda (the range of fp32, no loss scaling needed), fp32 on
//                          the CPU; fp16 on cuda turns on dynamic loss scaling
#pragma once

#include <stdexcept>
#include <string>

#include "configs/config.h"
#include "kernels/device.h"
#include "kernels/dtype.h"

namespace peftrun {

struct BackendChoice {
  DeviceKind device = DeviceKind::kCpu;  // kCpu or kCuda, never kAuto
  DType compute = DType::kF32;           // activations' storage type
  std::string note;                      // for the log: what was chosen and why
  bool cuda() const { return device == DeviceKind::kCuda; }
  bool loss_scaling() const { return cuda() && compute == DType::kF16; }
};

// runtime.device: cuda when it cannot be honoured.
struct BackendUnavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

BackendChoice choose_backend(const RuntimeConfig& runtime, const DeviceInventory& devices);

// The activations' type on cuda for runtime.compute_dtype (auto = bf16).
DType cuda_compute_dtype(ComputeDtype compute);

}  // namespace peftrun
