// Attention's scalar rules, shared by attention_cpu.cpp and the flash kernels
// (attention_blocks.h): which keys a query sees, and the softmax backward of one score.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace peftrun {

// Query t sees key s when s <= t (causal); with a sliding window (window > 0) only the last
// `window` keys up to and including t (t - s < window, transformers' sliding_window_overlay);
// and, for packed documents, only keys with the same segment id.
PEFTRUN_HD bool attention_visible(int t, int s, int window, bool packed, std::int32_t seg_t,
                                  std::int32_t seg_s) {
  return s <= t && (window <= 0 || t - s < window) && (!packed || seg_s == seg_t);
}

// The first key query t sees by position: 0, or the window's start.
PEFTRUN_HD int attention_first_key(int t, int window) {
  return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}

// dS = P (dP - D), D = sum_s P dP over the row (equal to rowsum(dO * O), which the GPU uses).
template <typename T>
PEFTRUN_HD T softmax_grad(T p, T dp, T row_dot) {
  return p * (dp - row_dot);
}

}  // namespace peftrun
