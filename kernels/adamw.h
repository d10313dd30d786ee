// AdamW over a flat fp32 buffer, exactly torch.optim.AdamW (decoupled weight decay):
//   p -= lr * wd * p
//   m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2          (g = grad * grad_scale)
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// step is 1-based. grad_scale carries global-norm clipping and the loss-scale undo (1 / scale
// with fp16 dynamic loss scaling, kernels/loss_scale.h).
//
// The per-element formula is adamw_element (kernels/adamw_math.h), shared by the CPU and the
// CUDA twin, so for fp32 the GPU update is bit-identical to the CPU one.
#pragma once

#include <cstddef>

#include "kernels/adamw_math.h"
#include "kernels/cuda_memory.h"

namespace peftrun {

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  long step = 1;
  double grad_scale = 1.0;
};

// The step's scalars (std::pow on the host), identical for both backends.
AdamWScalars adamw_scalars(const AdamWHyper& h);

namespace cpu {

using peftrun::AdamWHyper;

template <typename T>
void adamw_step(T* params, const T* grads, T* m, T* v, std::size_t n, const AdamWHyper& h);

// Sum of squares in double (for the global gradient norm).
template <typename T>
double sum_squares(const T* x, std::size_t n);

}  // namespace cpu

namespace cuda {

// Device twin of cpu::adamw_step<float> over flat device buffers (params, m, v updated in
// place). Bit-identical to the CPU for the same inputs.
void adamw_step(float* params, const float* grads, float* m, float* v, std::size_t n,
                const AdamWHyper& h, Stream stream);

// Scratch of sum_squares: one double per reduction block.
std::size_t sum_squares_workspace_bytes(std::size_t n);

// *result (device double) = sum of x[i]^2 in double, deterministic (fixed grid, block partials
// summed in order by one block). x: n device floats. The gradient-norm reduction; non-finite
// gradients make the sum non-finite (squares of finite floats cannot overflow a double).
void sum_squares(const float* x, std::size_t n, double* result, void* work, Stream stream);

}  // namespace cuda
}  // namespace peftrun
