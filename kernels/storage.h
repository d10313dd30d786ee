// Storage policies of device tensors: how a kernel reads an fp32 / fp16 / bf16 element as fp32
// and writes an fp32 result back rounded to nearest even. Kernels compute in fp32 always; the
// policy is a template parameter so one kernel body serves every storage dtype.
//
// On the device the conversions are CUDA's intrinsics; on the host (the CPU emulator of
// kernels/block_context.h) they are half.h / dtype.h's bit conversions, which round the same way.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/dtype.h"
#include "kernels/half.h"
#include "kernels/host_device.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace peftrun {

struct F32Storage {
  using Elem = float;
  static constexpr DType kDType = DType::kF32;
  PEFTRUN_HD static float to_float(float x) { return x; }
  PEFTRUN_HD static float from_float(float x) { return x; }
};

struct F16Storage {
  using Elem = half_bits;
  static constexpr DType kDType = DType::kF16;
  PEFTRUN_HD static float to_float(half_bits x) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(x));
#else
    return half_to_float(x);
#endif
  }
  PEFTRUN_HD static half_bits from_float(float x) {
#if defined(__CUDA_ARCH__)
    return __half_as_ushort(__float2half_rn(x));
#else
    return float_to_half(x);
#endif
  }
};

struct BF16Storage {
  using Elem = bf16_bits;
  static constexpr DType kDType = DType::kBF16;
  PEFTRUN_HD static float to_float(bf16_bits x) {
#if defined(__CUDA_ARCH__)
    return __bfloat162float(__ushort_as_bfloat16(x));
#else
    return bf16_to_float(x);
#endif
  }
  PEFTRUN_HD static bf16_bits from_float(float x) {
#if defined(__CUDA_ARCH__)
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
    return float_to_bf16(x);
#endif
  }
};

// Calls f(F32Storage{}), f(F16Storage{}) or f(BF16Storage{}) for `dtype` (host side, to pick a
// kernel instantiation).
template <class F>
void with_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32:
      f(F32Storage{});
      return;
    case DType::kF16:
      f(F16Storage{});
      return;
    case DType::kBF16:
      f(BF16Storage{});
      return;
  }
  throw std::invalid_argument("unknown storage dtype " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace peftrun
