// Logit soft-capping (Gemma 2): a score or logit x becomes cap * tanh(x / cap), so it stays in
// (-cap, cap). Gemma 2 caps its attention scores (after the scale, before the mask) at 50 and its
// final logits (before the cross-entropy) at 30. Shared by the CPU attention and cross-entropy and
// their CUDA twins, so both run the formula transformers runs; cap <= 0 means none.
#pragma once

#include <cmath>

#include "kernels/host_device.h"

namespace peftrun {

template <typename T>
PEFTRUN_HD T softcapped(T x, T cap) {
  return cap > T(0) ? cap * std::tanh(x / cap) : x;
}

// d softcapped(x) / dx from the capped value z = softcapped(x): 1 - tanh^2 = 1 - (z / cap)^2 (what
// torch's tanh backward computes from its output); 1 without a cap.
template <typename T>
PEFTRUN_HD T softcapped_grad(T z, T cap) {
  if (cap <= T(0)) return T(1);
  const T u = z / cap;
  return T(1) - u * u;
}

}  // namespace peftrun
