// Rotary position embedding in HF LLaMA's "rotate_half" layout over the first rotary_dim
// channels of each head: the pairs are (i, i + r/2) for i < r/2 (r = rotary_dim), rotated by
// angle pos * inv_freq[i]:
//   out[i]          = x[i] cos - x[i + r/2] sin
//   out[i + r/2]    = x[i + r/2] cos + x[i] sin
// and channels [r, head_dim) pass unchanged (partial rotary, transformers' partial_rotary_factor:
// Phi-4-mini rotates 96 of 128; r = head_dim everywhere else).
// x: [tokens, n_heads, head_dim], rotated in place. pos: [tokens] position of each token inside
// its sequence (restarting per packed document). inv_freq: [rotary_dim / 2] host memory, from
// rope_inverse_frequencies (rope_frequencies.h), which knows HF's RoPE variants; cos_sin_scale
// multiplies cos and sin (rope_attention_scaling: 1 but for yarn). Angles, cos and sin are
// computed in float (as HF does) and the rotation in T.
#pragma once

#include <cstdint>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun {

// The widest head (and rotary_dim) either side rotates: the CUDA kernel carries rotary_dim / 2
// inverse frequencies in its parameters, and the CPU its per-token cos / sin on the stack.
inline constexpr int kRopeMaxHeadDim = 256;

}  // namespace peftrun

namespace peftrun::cpu {

template <typename T>
void rope_forward(T* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                  int rotary_dim, const float* inv_freq, float cos_sin_scale);

// dx in place: the gradient of a rotation (times cos_sin_scale) is its transpose, the inverse
// rotation times the same scale.
template <typename T>
void rope_backward(T* dx, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                   int rotary_dim, const float* inv_freq, float cos_sin_scale);

}  // namespace peftrun::cpu

// CUDA twin (rope_cuda.cu, kernels in rope_blocks.h): x in place, stored in `dtype`; pos [tokens]
// int32 on the device; inv_freq [rotary_dim / 2] in host memory (it travels in the kernel's
// parameters), the same table as the CPU's, so both rotate by the same float angles. head_dim
// at most 256, rotary_dim even and in [2, head_dim].
namespace peftrun::cuda {

void rope_forward(void* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                  int rotary_dim, const float* inv_freq, float cos_sin_scale, DType dtype,
                  Stream stream);
void rope_backward(void* dx, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                   int rotary_dim, const float* inv_freq, float cos_sin_scale, DType dtype,
                   Stream stream);

}  // namespace peftrun::cuda
