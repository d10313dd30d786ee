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
//
// CUDA twin (namespace peftrun::cuda, dora_cuda.cu). The factor g = m / n is applied as
// cuBLASLt's per-output-channel alpha vector inside the matmuls, so y needs no scaling pass:
//   no dropout:   v = g * (x W^T)                       [alpha vector g, beta 0]
//                 y = (s g) * (xa B^T) + v + b          [alpha vector s g, C = v, bias epilogue]
//   with dropout: v = g * (x~ W^T)                      [alpha vector g]
//                 y = (x - x~) W^T + v + b              [C = v, bias epilogue]
//                 y += (s g) * (xa B^T)                 [alpha vector s g, beta 1]
// (the dropout line is PEFT's form rearranged: x W^T + (g - 1) x~ W^T = (x - x~) W^T + g x~ W^T,
// still two base GEMMs). Backward needs z = x~ W^T + s xa B^T only through
// sum_i dy[i, j] z[i, j], which it gets from the saved v = g * (x~ W^T) and P = dy^T xa (the
// product dB needs anyway): z-sum_j = colsum(dy * v)_j / g_j + s <B_j, P_j>, so no [n, out]
// z is kept and dm costs one fused pass over dy and v. The price: dm_j divides by m_j, so a
// magnitude of exactly 0 gives a non-finite dm_j (the CPU twin already fails for n_j = 0).
// Where cuBLASLt offers no algorithm for the alpha-vector pointer mode on a shape, v falls
// back to a plain matmul into fp32 scratch + scale_columns (v = g * z rounded once: scaling the
// rounded 16-bit product would lose any g within half an ulp of 1) and the LoRA term to
// s xa (g B)^T (B's fp32 rows scaled, then rounded, [out, r]), each reported once through
// BlasLt::report_fallback. Backward's dy * g is rounded like PEFT's bf16 autograd rounds it.
#pragma once

#include <cstddef>

#include "kernels/blaslt.h"
#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"
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
//   backward: g [out] + dm's column sums [out] + dy * g (then dy * (g - 1)) [n, out] + dxa [n, r]
inline std::size_t dora_linear_workspace(int n, int out, int r) {
  const std::size_t fwd = static_cast<std::size_t>(out) * r;
  const std::size_t bwd = static_cast<std::size_t>(out) + static_cast<std::size_t>(n) * out +
                          static_cast<std::size_t>(n) * r;
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

namespace peftrun::cuda {

// w_sq[j] = sum_k W[j, k]^2, accumulated in double, stored fp32. W [out, in] in w_type.
void row_sq_norms(const void* W, DType w_type, int out, int in, float* w_sq, Stream stream);

// Scratch of dora_weight_norm: A cast to w_type [r, in] (none for fp32), P = W A^T [out, r]
// fp32, G = A A^T [r, r] fp32.
std::size_t dora_norm_workspace_bytes(int out, int in, int r, DType w_type);

// norm[j] = || W_j + s (B A)_j || (fp32 [out], overwritten) by the rank-r identity: two
// matmuls (P = W A^T with A rounded to w_type, G = A A^T in fp32) and one thread per row
// (dora_norm_from_parts, double). W [out, in] in w_type; w_sq = row_sq_norms(W); A [r, in],
// B [out, r] fp32.
void dora_weight_norm(BlasLt& lt, const void* W, DType w_type, const float* w_sq, const float* A,
                      const float* B, int out, int in, int r, float scale, float* norm, void* work,
                      Stream stream);

struct DoraLinearArgs {
  // Shapes, act, W, bias, A, B, s, dropout and the saved xa / x_drop as for cuda::lora_linear
  // (lora.work is not used).
  LoraLinearArgs lora;
  const float* magnitude = nullptr;    // m [out]
  const float* weight_norm = nullptr;  // n [out] from dora_weight_norm (detached)
  void* v = nullptr;                   // [n, out] act, saved for backward: g * (x~ W^T)
  void* work = nullptr;                // dora_linear_workspace_bytes(...), scratch (not saved)
};

std::size_t dora_linear_workspace_bytes(int n, int in, int out, int r, DType act, bool dropout);

// y [n, out] act overwritten; fills v, lora.xa (and lora.x_drop with dropout).
void dora_linear_forward(BlasLt& lt, const DoraLinearArgs& a, const void* x, void* y,
                         Stream stream);

// Backward with n held constant. dx [n, in] act overwritten (nullptr = not needed); dA, dB, dm
// fp32 ACCUMULATED. x is the forward input, dy [n, out] act.
void dora_linear_backward(BlasLt& lt, const DoraLinearArgs& a, const void* x, const void* dy,
                          void* dx, float* dA, float* dB, float* dm, Stream stream);

// The non-matmul steps of dora_weight_norm and dora_linear_* (the kernels of dora_blocks.h),
// exposed so the parity tests (tests/gpu/dora_cases.h) can check each one on the device as the
// CPU emulator does. Device pointers, fp32 unless noted.
namespace dora_steps {
// norm[j] = dora_norm_from_parts(w_sq[j], B_j, P_j, G): w_sq, norm [out]; B, P [out, r];
// G [r, r].
void norm_rows(const float* w_sq, const float* B, const float* P, const float* G, int out, int r,
               float scale, float* norm, Stream stream);
// g = m / n, sg = s g, gm1 = g - 1 ([out] each).
void factors(const float* m, const float* n, float scale, int out, float* g, float* sg, float* gm1,
             Stream stream);
// partial[split, j] = sum of dy[i, j] v[i, j] over the split's rows (n rows cut into `splits`
// chunks of ceil(n / splits)), dyg = dy * fac; dy, v, dyg [n, out] act; partial [splits, out].
void dy_v_columns(const void* dy, const void* v, const float* fac, DType act, int n, int out,
                  int splits, float* partial, void* dyg, Stream stream);
// dB += s g P, dm += colsum / m + (s / n) <B, P> with colsum the partials summed over splits.
void grad_rows(const float* g, const float* m, const float* nrm, float scale, const float* partial,
               int splits, const float* B, const float* P, int out, int r, float* dB, float* dm,
               Stream stream);
}  // namespace dora_steps

}  // namespace peftrun::cuda
