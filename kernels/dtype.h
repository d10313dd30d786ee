// Storage types of device tensors. Host code holds fp16/bf16 values as raw 16-bit patterns
// (half_bits / bf16_bits) so the CPU build needs no compiler support for them; CUDA kernels
// reinterpret the same bytes as __half / __nv_bfloat16. Arithmetic is always fp32 (or fp64 in
// the CPU gradient checks); these types are only how tensors are stored.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/half.h"
#include "kernels/host_device.h"

namespace peftrun {

enum class DType : std::uint8_t { kF32, kF16, kBF16 };

inline constexpr std::size_t dtype_size(DType t) {
  return t == DType::kF32 ? 4 : 2;
}
inline constexpr const char* dtype_name(DType t) {
  return t == DType::kF32 ? "fp32" : t == DType::kF16 ? "fp16" : "bf16";
}

using bf16_bits = std::uint16_t;

// bf16 is the top half of an fp32: widening is exact.
PEFTRUN_HD float bf16_to_float(bf16_bits b) {
  const std::uint32_t x = static_cast<std::uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &x, sizeof(f));
  return f;
}

// Round to nearest even, like CUDA's __float2bfloat16_rn; NaN stays a (quiet) NaN.
PEFTRUN_HD bf16_bits float_to_bf16(float f) {
  std::uint32_t x;
  __builtin_memcpy(&x, &f, sizeof(x));
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_bits>((x >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<bf16_bits>((x + rounding) >> 16);
}

}  // namespace peftrun
