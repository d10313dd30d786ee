// RoPE's scalar formulas, shared by rope_cpu.cpp and the CUDA kernel (rope_blocks.h).
#pragma once

#include <cmath>

#include "kernels/host_device.h"

namespace peftrun {

// Plain RoPE's inv_freq[i] = 1 / theta^(2i / head_dim), each step in float exactly as HF LLaMA
// builds it (arange(0, dim, 2).float() / dim, then base ** that, then 1.0 / that); the start of
// every variant in rope_frequencies.cpp.
PEFTRUN_HD float rope_inv_freq(int i, int head_dim, float theta) {
  const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  return 1.0f / std::pow(theta, expo);
}

// The rotation of one pair (a, b) = (x[i], x[i + head_dim/2]) by an angle with cosine c and
// (signed) sine s:  a' = a c - b s,  b' = b c + a s.
template <typename T>
PEFTRUN_HD void rope_rotate_pair(T a, T b, T c, T s, T* a_out, T* b_out) {
  *a_out = a * c - b * s;
  *b_out = b * c + a * s;
}

}  // namespace peftrun
