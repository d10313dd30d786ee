// Causal multi-head self-attention with grouped-query attention (GQA).
//
// q: [B, T, H, hd]; k, v: [B, T, KV, hd]; out: [B, T, H, hd]. Query head h attends with kv head
// h / (H / KV). Scores are scaled by 1/sqrt(hd); token t sees tokens s <= t of the same sequence,
// and when `segment` ([B*T], nullable) is given only those with segment[s] == segment[t] (packed
// documents). probs: [B, H, T, T] softmax probabilities saved for backward (masked entries = 0).
// The CPU version keeps probs (memory O(B H T^2)); the CUDA version will be flash-style.
#pragma once

#include <cstdint>

namespace peftrun::cpu {

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const std::int32_t* segment, T* out,
                       T* probs, int B, int T_len, int H, int KV, int hd);

// dq: [B,T,H,hd]; dk, dv: [B,T,KV,hd]; all overwritten (dk/dv sum over the heads of a group).
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                        T* dk, T* dv, int B, int T_len, int H, int KV, int hd);

}  // namespace peftrun::cpu
