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
// Orthogonality regulariser (one matrix), importance EMA, triplet scores: see below. The budget
// allocator that uses them lives in runtime/adapters/adalora_allocator.h; it ranks the scores
// of all modules on the host (a few thousand floats), whichever backend computed them.
//
// CUDA twin (namespace peftrun::cuda, adalora_cuda.cu): the linear layer is cuda::lora_linear's
// matmul sequence with A~ = E * A cast into the workspace, followed by the E chain rule; the
// importance update and the triplet scores run over the flat device buffers with the same
// per-element functions (kernels/adalora_math.h), so the EMAs are bit-identical to the CPU's.
// These kernels are block functors (kernels/adalora_blocks.h), so the CPU suite runs them in
// the block emulator (tests/emulated_adalora_test.cpp).
// The orthogonality regulariser of every A and B is one launch over the flat buffers (also in
// adalora_blocks.h): one block per matrix, the Gram matrix and ||C|| in double, ranks up to
// kAdaLoraOrthMaxRank.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/blaslt.h"
#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"
#include "kernels/lora_linear.h"

namespace peftrun {

// Where one module's triplets sit in the flat buffers (params, grads, EMAs share the layout):
// A [r, in] at a, B [out, r] at b, E [r] at e (element offsets).
struct AdaLoraModuleView {
  std::size_t a = 0, b = 0, e = 0;
  int r = 0, in = 0, out = 0;
};

// One matrix of the orthogonality regulariser in the flat buffers (params and grads share the
// layout): P [rows, cols] row-major at element `offset`; is_A: a lora_A [r, in] (C = P P^T - I,
// rank d = rows), else a lora_B [out, r] (C = P^T P - I, d = cols). A plain struct, so a table
// of them can be copied to the device as bytes.
struct AdaLoraOrthMatrix {
  std::uint64_t offset = 0;
  std::int32_t rows = 0, cols = 0;
  std::int32_t is_A = 0;  // 1 = lora_A, 0 = lora_B
  std::int32_t unused = 0;
};

// The largest rank d cuda::adalora_orth_reg handles: the block keeps C [d, d] in double in
// shared memory (d = 128: 138 KiB with the staged tile, within what an sm_80 block may opt in
// to). Larger ranks must use the host function (cpu::orth_reg per matrix).
inline constexpr int kAdaLoraOrthMaxRank = 128;

}  // namespace peftrun

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

// Triplet scores of one module (PEFT's _element_score + _combine_ipt):
//   S_k = s(E_k) + (mean_j s(A[k, j]) + mean_i s(B[i, k])),   s = ipt_ema * unc_ema (fp32)
// with the means summed in double and rounded once (triplet_score). scores: [m.r].
void adalora_triplet_scores(const float* ipt_ema, const float* unc_ema, const AdaLoraModuleView& m,
                            float* scores);

}  // namespace peftrun::cpu

namespace peftrun::cuda {

struct AdaLoraLinearArgs {
  // Shapes, act, W, bias, lora.A = lora_A (P, not scaled by E), lora.B = lora_B, lora.scale = c,
  // dropout and the saved xa / x_drop as for cuda::lora_linear (lora.work is not used).
  LoraLinearArgs lora;
  const float* E = nullptr;  // [r]
  void* work = nullptr;      // adalora_linear_workspace_bytes(...), scratch (not saved)
};

// Scratch: A~ = E * A in act [r, in], B in act [out, r] (16-bit only), dA~ [r, in] fp32 and
// dxa [n, r] act.
std::size_t adalora_linear_workspace_bytes(int n, int in, int out, int r, DType act);

// y [n, out] act overwritten; fills lora.xa (and lora.x_drop with dropout).
void adalora_linear_forward(BlasLt& lt, const AdaLoraLinearArgs& a, const void* x, void* y,
                            Stream stream);

// dA [r, in], dE [r], dB [out, r] fp32 ACCUMULATED; dx [n, in] act overwritten (nullptr = not
// needed). x is the forward input, dy [n, out] act.
void adalora_linear_backward(BlasLt& lt, const AdaLoraLinearArgs& a, const void* x, const void* dy,
                             void* dx, float* dA, float* dE, float* dB, Stream stream);

// The chain rule through A~ = E * A that adalora_linear_backward applies to dA~ (its scratch):
//   dA[k, :] += E[k] dA~[k, :];  dE[k] += sum_j dA~[k, j] A[k, j]  (summed in double)
// dA_scaled = dA~, A and dA [r, in], E and dE [r], all fp32 device buffers; dA, dE ACCUMULATED.
void adalora_e_chain(const float* dA_scaled, const float* A, const float* E, int r, int in,
                     float* dA, float* dE, Stream stream);

// Device twin of cpu::adalora_update_importance<float> over n flat device floats.
void adalora_update_importance(const float* p, const float* g, float* ipt_ema, float* unc_ema,
                               std::size_t n, double beta1, double beta2, double grad_scale,
                               Stream stream);

// Device twin of cpu::adalora_triplet_scores: ipt_ema / unc_ema are the flat device buffers,
// scores [m.r] device floats.
void adalora_triplet_scores(const float* ipt_ema, const float* unc_ema, const AdaLoraModuleView& m,
                            float* scores, Stream stream);

// Device twin of cpu::orth_reg<float> for `count` matrices in one launch. mats [count]: device
// descriptors into the flat device buffers params / grads (uploaded once, not per step); for
// every m < count:
//   norms[m] = ||C_m||_F       (device doubles, overwritten; the Gram and C in double)
//   grads   += weight * d||C_m||_F / dP_m   (2 C P / ||C|| for A, 2 P C / ||C|| for B)
// where the gradient is skipped exactly as cpu::orth_reg skips it: ||C_m|| = 0 or weight = 0
// leave that matrix's grads untouched (grads = nullptr: norms only). Elements outside the
// matrices are never written. max_rank in [1, kAdaLoraOrthMaxRank] must be >= every matrix's
// rank d (it sizes the shared memory); a matrix whose d is above it or < 1, or whose long
// dimension is < 1, gets a NaN norm and no gradient. Deterministic: fixed reduction orders, no
// atomics. The caller forms PEFT's term from the norms (runtime/adapters/adalora_regulariser.h).
void adalora_orth_reg(const float* params, float* grads, const AdaLoraOrthMatrix* mats, int count,
                      int max_rank, float weight, double* norms, Stream stream);

}  // namespace peftrun::cuda
