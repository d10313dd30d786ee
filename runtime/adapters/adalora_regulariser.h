// AdaLoRA's orthogonality regulariser over the whole flat adapter buffer (HF PEFT 0.21
// AdaLoraModel.forward): the trainer and the golden tests compute the loss term and its gradient
// with this one function, so the tests check the code that trains. The CUDA backend runs the
// same per-matrix math on the device (cuda::adalora_orth_reg over adalora_orth_matrices()) and
// forms the term and the per-matrix weight with the two functions below, as this one does.
#pragma once

#include <cstddef>
#include <vector>

#include "configs/config.h"
#include "kernels/adalora.h"
#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

// orth_reg_weight * mean over every lora_A and lora_B of ||P P^T - I||_F (resp. ||P^T P - I||_F),
// the norm NOT squared, exactly PEFT's term. Returns the weighted term and ADDS its gradient into
// `grads` (same flat layout as `params`). PEFT adds it to every micro-batch's loss and divides by
// the accumulation steps, which is the same as adding it once per optimizer step; in data
// parallel it is added after the gradient all-reduce so every rank adds the same term once.
// `work` is resized as needed (kept by the caller so the step loop does not allocate).
// Returns 0 and leaves `grads` alone when orth_reg_weight <= 0 or there is no module.
// `grad_scale`: the factor the gradients in `grads` carry (fp16 dynamic loss scaling, a power
// of two); the term's gradient is added at that scale too. 1 = plain gradients.
double add_adalora_orth_regulariser(const AdapterLayout& layout, const AdapterConfig& cfg,
                                    const float* params, float* grads, std::vector<float>& work,
                                    double grad_scale = 1.0);

// Every matrix of the term in the order the sum takes them: A0, B0, A1, B1, ... (module order).
std::vector<AdaLoraOrthMatrix> adalora_orth_matrices(const AdapterLayout& layout);

// The weight each matrix's gradient is added with: d(orth_reg_weight * mean_i ||C_i||)/dP_i =
// (orth_reg_weight / matrices) d||C_i||/dP_i, times grad_scale (exact for 1 and any power of
// two), rounded to fp32 once.
float adalora_orth_weight(const AdapterConfig& cfg, std::size_t matrices, double grad_scale);

// The returned term from the per-matrix norms (in adalora_orth_matrices() order, summed in
// that order): orth_reg_weight * sum(norms) / matrices.
double adalora_orth_term(const AdapterConfig& cfg, const double* norms, std::size_t matrices);

}  // namespace peftrun
