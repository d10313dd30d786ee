// Attention's scalar rules, shared by attention_cpu.cpp and the flash kernels
// (attention_blocks.h): which keys a query sees, and the softmax backward of one score.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace peftrun {

// Query t sees key s when s <= t (causal) and, for packed documents, both carry the same
// segment id.
PEFTRUN_HD bool attention_visible(int t, int s, bool packed, std::int32_t seg_t,
                                  std::int32_t seg_s) {
  return s <= t && (!packed || seg_s == seg_t);
}

// dS = P (dP - D), D = sum_s P dP over the row (equal to rowsum(dO * O), which the GPU uses).
template <typename T>
PEFTRUN_HD T softmax_grad(T p, T dp, T row_dot) {
  return p * (dp - row_dot);
}

}  // namespace peftrun
