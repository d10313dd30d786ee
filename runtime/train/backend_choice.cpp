#include "runtime/train/backend_choice.h"

namespace peftrun {

namespace {

BackendChoice cpu_choice(const RuntimeConfig& rt, const std::string& why) {
  BackendChoice c;
  c.note = "cpu (" + why + ")";
  if (rt.compute_dtype == ComputeDtype::kFp16 || rt.compute_dtype == ComputeDtype::kBf16) {
    c.note += ", fp32 compute (runtime.compute_dtype " + std::string(to_string(rt.compute_dtype)) +
              " applies to cuda only)";
  }
  return c;
}

}  // namespace

BackendChoice choose_backend(const RuntimeConfig& rt, const DeviceInventory& devices) {
  const bool usable = devices.cuda_compiled && devices.cuda_devices > 0;
  if (rt.device == DeviceKind::kCpu) return cpu_choice(rt, "runtime.device: cpu");
  if (rt.device == DeviceKind::kCuda && !usable) {
    const std::string why =
        !devices.cuda_compiled ? "this peftrun was built without the CUDA backend (" +
                                     devices.note + "); rebuild where the CUDA toolkit is installed"
                               : "no CUDA device is usable (" + devices.note + ")";
    throw BackendUnavailable("runtime.device: 'cuda' requested, but " + why +
                             "; use runtime.device: cpu or auto");
  }
  if (!usable) return cpu_choice(rt, "auto: " + devices.note);
  BackendChoice c;
  c.device = DeviceKind::kCuda;
  c.compute = cuda_compute_dtype(rt.compute_dtype);
  c.note = std::string("cuda (") + (rt.device == DeviceKind::kAuto ? "auto: " : "") +
           std::to_string(devices.cuda_devices) + " device(s) visible), " + dtype_name(c.compute) +
           " compute" + (c.compute == DType::kF16 ? " with dynamic loss scaling" : "");
  return c;
}

DType cuda_compute_dtype(ComputeDtype d) {
  switch (d) {
    case ComputeDtype::kFp32:
      return DType::kF32;
    case ComputeDtype::kFp16:
      return DType::kF16;
    case ComputeDtype::kAuto:
    case ComputeDtype::kBf16:
      break;
  }
  return DType::kBF16;
}

}  // namespace peftrun
