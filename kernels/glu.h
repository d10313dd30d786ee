// The gated MLP's activation, element-wise over n values: out = act(gate) * up, with act silu
// (SwiGLU: LLaMA, Mistral, Qwen) or GELU's tanh approximation (GeGLU: Gemma). The scalar
// formulas live in kernels/activations.h (shared with CUDA).
#pragma once

#include <cstddef>

#include "kernels/activations.h"
#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun::cpu {

template <typename T>
void glu_forward(GluActivation act, const T* gate, const T* up, T* out, std::size_t n);

// dgate, dup overwritten.
template <typename T>
void glu_backward(GluActivation act, const T* dout, const T* gate, const T* up, T* dgate, T* dup,
                  std::size_t n);

}  // namespace peftrun::cpu

// CUDA twin (glu_cuda.cu, kernels in glu_blocks.h): every tensor stored in `dtype`, math in fp32
// with the same activations.h formulas. Pointwise: out may alias gate or up, dgate may alias
// gate and dup may alias up.
namespace peftrun::cuda {

void glu_forward(GluActivation act, const void* gate, const void* up, void* out, std::size_t n,
                 DType dtype, Stream stream);
void glu_backward(GluActivation act, const void* dout, const void* gate, const void* up,
                  void* dgate, void* dup, std::size_t n, DType dtype, Stream stream);

}  // namespace peftrun::cuda
