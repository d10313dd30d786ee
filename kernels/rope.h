// Rotary position embedding in HF LLaMA's "rotate_half" layout: within each head the pairs are
// (i, i + head_dim/2) for i < head_dim/2, rotated by angle pos * theta^(-2i/head_dim):
//   out[i]          = x[i] cos - x[i + h/2] sin
//   out[i + h/2]    = x[i + h/2] cos + x[i] sin
// x: [tokens, n_heads, head_dim], rotated in place. pos: [tokens] position of each token inside
// its sequence (restarting per packed document later). Frequencies and angles are computed in
// float (as HF does) and the rotation in T.
#pragma once

#include <cstdint>

namespace peftrun::cpu {

template <typename T>
void rope_forward(T* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                  float theta);

// dx in place: the gradient of a rotation is the inverse rotation.
template <typename T>
void rope_backward(T* dx, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                   float theta);

}  // namespace peftrun::cpu
