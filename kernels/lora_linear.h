// A frozen linear layer with a LoRA branch (HF PEFT's definition, DESIGN §4):
//
//   y = x W^T + bias + s * drop(x) A^T B^T
//
// x: [n, in]; W: [out, in] (frozen, already converted to T); bias: [out] or nullptr;
// A: [r, in]; B: [out, r]; y: [n, out]. drop(x) = x * keep / (1 - p) with keep a 0/1 mask
// [n, in] (nullptr = no dropout, and then x_drop may be nullptr too).
//
// Saved for backward (caller-owned, planned at start-up):
//   x_drop: [n, in] dropped input (only when keep != nullptr)
//   xa:     [n, r]  drop(x) A^T
#pragma once

#include <cstdint>

namespace peftrun::cpu {

template <typename T>
struct LoraLinearArgs {
  int n = 0, in = 0, out = 0, r = 0;
  T scale = 0;                         // s = alpha / r (or alpha / sqrt(r))
  const T* W = nullptr;                // [out, in]
  const T* bias = nullptr;             // [out] or nullptr
  const T* A = nullptr;                // [r, in]
  const T* B = nullptr;                // [out, r]
  const std::uint8_t* keep = nullptr;  // [n, in] dropout keep mask or nullptr
  T keep_scale = 1;                    // 1 / (1 - p)
  T* x_drop = nullptr;                 // [n, in] workspace saved for backward (when keep)
  T* xa = nullptr;                     // [n, r] saved for backward
};

// y overwritten.
template <typename T>
void lora_linear_forward(const LoraLinearArgs<T>& a, const T* x, T* y);

// dx overwritten (nullptr = not needed); dA, dB ACCUMULATED (+=) so micro-batches add up.
// Uses a [n, r] workspace `dxa`.
template <typename T>
void lora_linear_backward(const LoraLinearArgs<T>& a, const T* x, const T* dy, T* dx, T* dA, T* dB,
                          T* dxa);

}  // namespace peftrun::cpu
