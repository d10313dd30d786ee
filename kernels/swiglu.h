// SwiGLU activation of the LLaMA MLP: out = silu(gate) * up, element-wise over n values.
// silu(g) = g * sigmoid(g). The scalar formulas live in kernels/activations.h (shared with CUDA).
#pragma once

#include <cstddef>

namespace peftrun::cpu {

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, std::size_t n);

// dgate, dup overwritten.
template <typename T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, std::size_t n);

}  // namespace peftrun::cpu
