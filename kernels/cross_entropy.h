// Softmax cross-entropy with ignore index, fused forward + backward over one chunk of rows.
//
// logits: [n, V]; targets: [n], kIgnoreIndex (-100) rows contribute nothing.
// Returns the SUM over non-ignored rows of -log softmax(logits)[target], in double.
// When dlogits is non-null it is overwritten: (softmax - onehot(target)) * grad_scale for kept
// rows and 0 for ignored rows. The caller passes grad_scale = 1 / (number of non-ignored tokens in
// the global batch), so losses and gradients average over tokens, not over micro-batches.
// dlogits may alias logits (computed row by row in place).
#pragma once

#include <cstdint>

namespace peftrun::cpu {

inline constexpr std::int32_t kIgnoreIndex = -100;

template <typename T>
double cross_entropy_forward_backward(const T* logits, const std::int32_t* targets, T* dlogits,
                                      int n, int V, T grad_scale);

}  // namespace peftrun::cpu
