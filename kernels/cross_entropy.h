// Softmax cross-entropy with ignore index, fused forward + backward over one chunk of rows.
//
// logits: [n, V]; targets: [n], kIgnoreIndex (-100) rows contribute nothing.
// Returns the SUM over non-ignored rows of -log softmax(logits)[target], in double.
// When dlogits is non-null it is overwritten: (softmax - onehot(target)) * grad_scale for kept
// rows and 0 for ignored rows. The caller passes grad_scale = 1 / (number of non-ignored tokens in
// the global batch), so losses and gradients average over tokens, not over micro-batches.
// dlogits may alias logits (computed row by row in place). With softcap > 0 the loss is that of
// the capped logits softcap * tanh(logits / softcap) (Gemma 2's final_logit_softcapping;
// softcap_math.h) and dlogits is with respect to the uncapped ones (times the cap's derivative).
// 0 = no cap.
#pragma once

#include <cstdint>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun::cpu {

inline constexpr std::int32_t kIgnoreIndex = -100;

template <typename T>
double cross_entropy_forward_backward(const T* logits, const std::int32_t* targets, T* dlogits,
                                      int n, int V, T grad_scale, T softcap);

}  // namespace peftrun::cpu

// CUDA twin (cross_entropy_cuda.cu, kernels in cross_entropy_blocks.h), with the same semantics
// over one row chunk: the model runs the lm_head GEMM per chunk and calls this on each, so the
// full [tokens, V] logits never exist. logits and dlogits are stored in `dtype`, math is fp32.
// row_loss [n] (fp32, device) receives each row's loss (0 for ignored rows); when loss_sum (one
// device double) is non-null the chunk's rows are added to it in a fixed order, so the sum over
// chunks is deterministic. dlogits may be null (loss only) or alias logits. A target outside
// [0, V) other than kIgnoreIndex makes that row's loss and gradient NaN (the non-finite checks
// then name the op). With fp16 dlogits, fold the loss scale into grad_scale: softmax / tokens
// underflows fp16 otherwise.
namespace peftrun::cuda {

void cross_entropy_forward_backward(const void* logits, const std::int32_t* targets, void* dlogits,
                                    float* row_loss, double* loss_sum, int n, int V,
                                    float grad_scale, float softcap, DType dtype, Stream stream);

}  // namespace peftrun::cuda
