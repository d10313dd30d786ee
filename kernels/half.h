// IEEE fp16 <-> fp32 conversion for the frozen base weights (stored as raw uint16 bits on the
// host, so the CPU build needs no compiler fp16 support). Round-to-nearest-even, like CUDA's
// __float2half_rn, so CPU and GPU round identically.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/host_device.h"

namespace peftrun {

using half_bits = std::uint16_t;

PEFTRUN_HD float half_to_float(half_bits h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;  // +-0
    } else {        // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
}

PEFTRUN_HD half_bits float_to_half(float f) {
  std::uint32_t x;
  __builtin_memcpy(&x, &f, sizeof(x));
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan (keep nan quiet)
    return static_cast<half_bits>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<half_bits>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {                                       // result is subnormal or zero
    if (abs < 0x33000000u) return static_cast<half_bits>(sign);  // below half of min subnormal
    const std::uint32_t exp = abs >> 23;
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - exp;  // 14 + (113 - exp) ... places mantissa at 2^-24 units
    std::uint32_t h = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<half_bits>(sign | h);
  }
  std::uint32_t h = ((abs >> 13) - ((127 - 15) << 10));
  const std::uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into exponent: correct
  return static_cast<half_bits>(sign | h);
}

// Bulk conversion used when a layer's fp16 weights are staged for fp32/fp64 compute.
template <typename T>
void half_to_real(const half_bits* src, T* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(half_to_float(src[i]));
}

// fp32: every layer is staged twice per step, so this runs on the step's critical path (~10% of
// a 125M model's CPU step when scalar). half_cpu.cpp converts 16 (AVX-512) or 8 (F16C) values
// per instruction when the CPU has them; the result is bit-identical to half_to_float for every
// non-NaN input (a signalling NaN comes back quiet).
template <>
void half_to_real<float>(const half_bits* src, float* dst, std::size_t n);

}  // namespace peftrun
