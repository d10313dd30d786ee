// DoRA (weight-decomposed LoRA) on a frozen linear layer, HF PEFT's definition (DESIGN §4):
//
//   n = || W + s B A ||_row            per output row, treated as a CONSTANT in backward
//   g = m / n                          [out], m is the trainable magnitude vector
//   no dropout:   y = b + g * (x W^T + s x A^T B^T)
//   with dropout: y = x W^T + b + (g - 1) * (x~ W^T) + g * s x~ A^T B^T,   x~ = drop(x)
//
// The dropout form is what PEFT computes when lora_dropout > 0 in training: the base output
// uses the clean x, the DoRA correction a second base GEMM on x~. Both forms agree when
// x~ = x. (g multiplies output columns: "g * M" means M[i, j] * g[j].)
//
// Shapes: x [n, in]; W [out, in] (frozen, already converted to T); bias [out] or nullptr;
// A [r, in]; B [out, r]; m [out]; y [n, out].
//
// n is never obtained by materialising W + sBA ([out, in] per step). Expanding the square:
//   n^2 = ||W||^2_row + 2s rowsum(B * (W A^T)) + s^2 rowsum((B (A A^T)) * B)
// which costs one [out, in] x [in, r] GEMM plus O(r^2 (in + out)); ||W||^2_row is constant
// and computed once (row_sq_norms).
#pragma once

#include <cstddef>

#include "kernels/lora_linear.h"

namespace peftrun::cpu {

// w_sq[j] = sum_k W[j, k]^2 (accumulated in double). W: [out, in]; w_sq: [out].
// DoRA's magnitude init is m = sqrt(w_sq) (PEFT: ||W + s B A|| with B = 0).
template <typename T>
void row_sq_norms(const T* W, int out, int in, T* w_sq);

// Elements of workspace dora_weight_norm needs: W A^T / B (A A^T) [out, r] + A A^T [r, r].
inline std::size_t dora_norm_workspace(int out, int r) {
  return static_cast<std::size_t>(out) * r + static_cast<std::size_t>(r) * r;
}

// norm[j] = || W_j + s (B A)_j || (overwritten), from the identity above; n^2 is clamped at 0
// before the sqrt (the expansion can round a tiny true value below zero).
// W [out, in], w_sq [out] (row_sq_norms(W)), A [r, in], B [out, r], norm [out],
// work: dora_norm_workspace(out, r) elements.
template <typename T>
void dora_weight_norm(const T* W, const T* w_sq, const T* A, const T* B, int out, int in, int r,
                      T scale, T* norm, T* work);

template <typename T>
struct DoraLinearArgs {
  // Shapes, W, bias, A, B, s, dropout (keep / keep_scale) and the LoRA buffers saved for
  // backward: lora.xa [n, r] = x~ A^T always, lora.x_drop [n, in] = x~ when keep != nullptr.
  LoraLinearArgs<T> lora;
  const T* magnitude = nullptr;    // m [out]
  const T* weight_norm = nullptr;  // n [out] from dora_weight_norm (detached)
  // Saved for backward: z = x~ W^T + s x~ A^T B^T [n, out] (x~ = x without dropout), the
  // pre-scale product, so that dm[j] = sum_i dy[i, j] z[i, j] / n[j].
  T* z = nullptr;
  T* work = nullptr;  // dora_linear_workspace(n, out, r) elements, scratch (not saved)
};

// Scratch for forward and backward (whichever is larger):
//   forward:  g [out] + B scaled by g [out, r]
//   backward: g [out] + dy * g (then dy * (g - 1)) [n, out] + dxa [n, r]
inline std::size_t dora_linear_workspace(int n, int out, int r) {
  const std::size_t fwd = static_cast<std::size_t>(out) * r;
  const std::size_t bwd = static_cast<std::size_t>(n) * out + static_cast<std::size_t>(n) * r;
  return static_cast<std::size_t>(out) + (fwd > bwd ? fwd : bwd);
}

// y overwritten; fills lora.xa, z (and lora.x_drop with dropout).
template <typename T>
void dora_linear_forward(const DoraLinearArgs<T>& a, const T* x, T* y);

// Backward with n held constant. dm [out], dA [r, in], dB [out, r] ACCUMULATED (+=);
// dx [n, in] overwritten (nullptr = not needed). x is the forward input.
template <typename T>
void dora_linear_backward(const DoraLinearArgs<T>& a, const T* x, const T* dy, T* dx, T* dA, T* dB,
                          T* dm);

}  // namespace peftrun::cpu
