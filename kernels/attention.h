// Causal multi-head self-attention with grouped-query attention (GQA).
//
// q: [B, T, H, hd]; k, v: [B, T, KV, hd]; out: [B, T, H, hd]. Query head h attends with kv head
// h / (H / KV). Scores are scaled by `scale` (attention_scale: 1/sqrt(hd), or Gemma 2 / 3's
// 1/sqrt(query_pre_attn_scalar)) and, with `softcap` > 0, soft-capped to softcap * tanh(S /
// softcap) before the mask (Gemma 2; softcap_math.h); token t sees tokens s <= t of the same
// sequence,
// with `window` > 0 only the last `window` of them (t - s < window: sliding-window attention as
// Mistral's and Gemma's; 0 = none), and when `segment` ([B*T], nullable) is given only those with
// segment[s] == segment[t] (packed documents). probs: [B, H, T, T] softmax probabilities saved for
// backward (masked entries = 0). The CPU version keeps probs (memory O(B H T^2)); the CUDA version
// is flash-style and saves the per-row logsumexp instead (see below).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun {

// 1 / sqrt(d) in T, the score scale: d = head_dim for most models.
template <typename T>
T attention_scale(double d) {
  return T(1) / std::sqrt(static_cast<T>(d));
}

}  // namespace peftrun

namespace peftrun::cpu {

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const std::int32_t* segment, int window,
                       T scale, T softcap, T* out, T* probs, int B, int T_len, int H, int KV,
                       int hd);

// dq: [B,T,H,hd]; dk, dv: [B,T,KV,hd]; all overwritten (dk/dv sum over the heads of a group).
// The masks (causal, window, segments) are in probs' zeros; backward takes the window (forward's)
// only to skip the key blocks before it. With softcap > 0 it recomputes the scores (one more
// Q K^T product per block) for the cap's derivative.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs,
                        int window, T scale, T softcap, T* dq, T* dk, T* dv, int B, int T_len,
                        int H, int KV, int hd);

}  // namespace peftrun::cpu

// CUDA twin (attention_cuda.cu; kernels in attention_blocks.h, and on tensor cores for fp16 /
// bf16 with head_dim % 16 == 0 up to 128 in attention_tc_blocks.h, the choice in
// attention_launch.h): the same semantics and layouts,
// flash-style, so the [T, T] matrix never exists. It differs from the CPU contract in what
// forward saves for backward: instead of probs, lse [B, H, T] (fp32), the logsumexp of each
// query row's scaled, capped, masked scores; backward recomputes the probabilities from q, k and
// lse and also needs the forward output, the segment ids and the window. q, k, v, out and the
// gradients are stored in `dtype` (fp32, fp16 or bf16); all arithmetic is fp32, except that the
// tensor-core kernels round P and dS to `dtype` before their second products. dk/dv sum over the
// query heads of a group in fp32 before being rounded once. All outputs are overwritten.
//
// head_dim must be a multiple of 8 in [8, 256] (attention_head_dim_supported); other shapes,
// H % KV != 0, B or H above 65535 and null tensors throw std::invalid_argument naming the op.
namespace peftrun::cuda {

inline bool attention_head_dim_supported(int hd) {
  return hd >= 8 && hd <= 256 && hd % 8 == 0;
}

// Backward's workspace: D = rowsum(dO * O), B * H * T floats, rounded up to 256 bytes.
inline std::size_t attention_backward_workspace_bytes(int B, int T_len, int H) {
  const std::size_t bytes = static_cast<std::size_t>(B) * T_len * H * sizeof(float);
  return (bytes + 255) / 256 * 256;
}

// q: [B,T,H,hd]; k, v: [B,T,KV,hd]; segment: [B*T] or null; out: [B,T,H,hd]; lse: [B,H,T].
void attention_forward(const void* q, const void* k, const void* v, const std::int32_t* segment,
                       int window, float scale, float softcap, void* out, float* lse, int B,
                       int T_len, int H, int KV, int hd, DType dtype, Stream stream);

// dout, out: [B,T,H,hd] (out and lse from forward); dq: [B,T,H,hd]; dk, dv: [B,T,KV,hd].
// workspace: at least attention_backward_workspace_bytes(B, T, H) bytes, 16-byte aligned.
void attention_backward(const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, const std::int32_t* segment, int window,
                        float scale, float softcap, void* dq, void* dk, void* dv, void* workspace,
                        std::size_t workspace_bytes, int B, int T_len, int H, int KV, int hd,
                        DType dtype, Stream stream);

}  // namespace peftrun::cuda
