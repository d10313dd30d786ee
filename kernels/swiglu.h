// SwiGLU activation of the LLaMA MLP: out = silu(gate) * up, element-wise over n values.
// silu(g) = g * sigmoid(g). The scalar formulas live in kernels/activations.h (shared with CUDA).
#pragma once

#include <cstddef>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun::cpu {

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, std::size_t n);

// dgate, dup overwritten.
template <typename T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, std::size_t n);

}  // namespace peftrun::cpu

// CUDA twin (swiglu_cuda.cu, kernels in swiglu_blocks.h): every tensor stored in `dtype`, math
// in fp32 with the same activations.h formulas. Pointwise: out may alias gate or up, dgate may
// alias gate and dup may alias up.
namespace peftrun::cuda {

void swiglu_forward(const void* gate, const void* up, void* out, std::size_t n, DType dtype,
                    Stream stream);
void swiglu_backward(const void* dout, const void* gate, const void* up, void* dgate, void* dup,
                     std::size_t n, DType dtype, Stream stream);

}  // namespace peftrun::cuda
