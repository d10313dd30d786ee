// AdaLoRA (SVD-parametrised LoRA with a global rank budget), HF PEFT's definition (DESIGN §4).
//
// Linear:  y = x W^T + b + c drop(x) (E * A)^T B^T
//   x [n, in]; W [out, in] (frozen); bias [out] or nullptr; A = P [r, in]; E = Lambda [r]
//   (PEFT's lora_E [r, 1]: it scales the ROWS of A); B = Q [out, r]; y [n, out];
//   c = alpha / (init_r + 1e-5) (AdapterLayout::scale(); PEFT's ranknum stays init_r, pruned
//   triplets are zeroed in E, never removed).
// With A~ = E * A the layer is exactly lora_linear with A~, so it is implemented that way; the
// chain rule through A~[k, :] = E[k] A[k, :] gives, with dA~ = dxa^T drop(x):
//   dA[k, :] += E[k] dA~[k, :]        dE[k] += sum_j dA~[k, j] A[k, j]
//
// Orthogonality regulariser (one matrix), importance EMA: see below. The budget allocator that
// uses them lives in runtime/adapters/adalora_allocator.h.
#pragma once

#include <cstddef>

#include "kernels/lora_linear.h"

namespace peftrun::cpu {

template <typename T>
struct AdaLoraLinearArgs {
  // Shapes, W, bias, lora.A = lora_A (P, NOT scaled by E), lora.B = lora_B (Q),
  // lora.scale = c, dropout, and the buffers saved for backward (lora.xa [n, r], lora.x_drop
  // [n, in] with dropout). lora.A is only read here; the E-scaled copy lives in `work`.
  LoraLinearArgs<T> lora;
  const T* E = nullptr;  // [r]
  T* work = nullptr;     // adalora_linear_workspace(n, in, r) elements, scratch (not saved)
};

// Scratch: A~ = E * A [r, in] + dA~ [r, in] + dxa [n, r]. A~ is rebuilt by backward, so the
// workspace may be shared by all layers between forward and backward.
inline std::size_t adalora_linear_workspace(int n, int in, int r) {
  return 2 * static_cast<std::size_t>(r) * in + static_cast<std::size_t>(n) * r;
}

// y overwritten; fills lora.xa (and lora.x_drop with dropout).
template <typename T>
void adalora_linear_forward(const AdaLoraLinearArgs<T>& a, const T* x, T* y);

// dA [r, in], dE [r], dB [out, r] ACCUMULATED (+=); dx [n, in] overwritten (nullptr = not
// needed). x is the forward input.
template <typename T>
void adalora_linear_backward(const AdaLoraLinearArgs<T>& a, const T* x, const T* dy, T* dx, T* dA,
                             T* dE, T* dB);

// Elements of workspace orth_reg needs: the Gram residual C, [rows, rows] for A, [cols, cols]
// for B.
inline std::size_t orth_reg_workspace(int rows, int cols, bool is_A) {
  const std::size_t d = static_cast<std::size_t>(is_A ? rows : cols);
  return d * d;
}

// PEFT's orthogonality penalty of one matrix P [rows, cols]:
//   is_A (lora_A, [r, in]):  C = P P^T - I  [rows, rows]
//   else (lora_B, [out, r]): C = P^T P - I  [cols, cols]
// Returns ||C||_F (NOT squared, computed in double) and ADDS weight * d||C||_F / dP to grad
// [rows, cols] (grad may be nullptr: value only): 2 C P / ||C|| for A, 2 P C / ||C|| for B (0 when
// ||C|| = 0, as torch's norm backward). PEFT's loss term is orth_reg_weight * mean over all A and B
// matrices of ||C||_F, so the caller passes weight = orth_reg_weight / (2 * #modules).
template <typename T>
double orth_reg(const T* P, int rows, int cols, bool is_A, T weight, T* grad, T* work);

// Sensitivity / uncertainty EMAs over a flat range (PEFT's RankAllocator.update_ipt, in its
// order, with every operation rounded to T as torch does for fp32 tensors):
//   g'      = g * grad_scale         (the clipped gradient; 1 = g as is)
//   ipt     = |p * g'|
//   ipt_ema = beta1 ipt_ema + (1 - beta1) ipt
//   unc_ema = beta2 unc_ema + (1 - beta2) |ipt - ipt_ema|   (the NEW ipt_ema)
// p: parameters after the optimizer step; g: the gradient that step used.
template <typename T>
void adalora_update_importance(const T* p, const T* g, T* ipt_ema, T* unc_ema, std::size_t n,
                               double beta1, double beta2, double grad_scale = 1.0);

}  // namespace peftrun::cpu
