// The per-model constants the decoder's kernels take besides its shapes: which gated activation
// the MLP uses, what the RMSNorms add to their weights, what the embedding rows are multiplied
// by, which layers attend through a sliding window, what the scores and logits are capped at.
// Transformer (CPU) and CudaTransformer both read them from here, so the two models cannot disagree
// on a variant.
#pragma once

#include <cmath>
#include <cstddef>

#include "configs/config.h"
#include "kernels/activations.h"
#include "kernels/attention.h"
#include "kernels/dtype.h"
#include "kernels/half.h"

namespace peftrun {

inline GluActivation glu_activation(const ModelConfig& m) {
  return m.mlp_activation == MlpActivation::kGeluTanh ? GluActivation::kGeluTanh
                                                      : GluActivation::kSilu;
}

// 1 where every norm scales by 1 + weight (Gemma), else 0.
inline float norm_weight_offset(const ModelConfig& m) {
  return m.norm_one_plus_weight ? 1.0f : 0.0f;
}

// sqrt(dim) for scale_embeddings, else Granite's embedding_multiplier (1 for the others).
// transformers holds Gemma's normalizer as a tensor of the model's dtype, so it is rounded to
// `dtype` (sqrt(3072) = 55.43 becomes 55.5 in bf16); fp32 is the CPU model's. Granite's is a
// Python float, which multiplies in fp32 unrounded.
inline float embedding_scale(const ModelConfig& m, DType dtype) {
  if (!m.scale_embeddings) return static_cast<float>(m.embedding_multiplier);
  const float s = static_cast<float>(std::sqrt(static_cast<double>(m.dim)));
  if (dtype == DType::kBF16) return bf16_to_float(float_to_bf16(s));
  if (dtype == DType::kF16) return half_to_float(float_to_half(s));
  return s;
}

// What the attention scores are scaled by: Granite's attention_multiplier where set, else the
// inverse square root of Gemma 2 / 3's query_pre_attn_scalar where set, else of head_dim.
template <typename T>
T attention_score_scale(const ModelConfig& m) {
  if (m.attention_multiplier > 0) return static_cast<T>(m.attention_multiplier);
  return attention_scale<T>(m.query_pre_attn_scalar > 0 ? m.query_pre_attn_scalar : m.head_dim());
}

// Granite's residual_multiplier (1 for the others): each block's output is multiplied by it
// before the residual add.
inline float residual_scale(const ModelConfig& m) {
  return static_cast<float>(m.residual_multiplier);
}

// What the lm_head's GEMMs scale by: 1 / Granite's logits_scaling (1 for the others).
inline float logits_alpha(const ModelConfig& m) {
  return static_cast<float>(1.0 / m.logits_scaling);
}

// Gemma 2's soft caps (softcap_math.h), 0 for none: of the attention scores, and of the final
// logits before the cross-entropy.
inline float attention_softcap(const ModelConfig& m) {
  return static_cast<float>(m.attn_logit_softcapping);
}
inline float logit_softcap(const ModelConfig& m) {
  return static_cast<float>(m.final_logit_softcapping);
}

// q_norm / k_norm as RMSNorm rows over `heads` heads of `tokens` tokens: [tokens * heads,
// head_dim] per head (Qwen3, Gemma 3), or [tokens, heads * head_dim] at once (OLMo 2).
struct NormRows {
  int rows, width;
};
inline NormRows qk_norm_rows(const ModelConfig& m, int tokens, int heads) {
  const int width = m.qk_norm_width(heads);
  return {tokens * heads * m.head_dim() / width, width};
}

// The sliding window of layer `l`'s attention in keys, 0 for full causal attention.
inline int attention_window(const ModelConfig& m, int l) {
  if (m.sliding_window <= 0) return 0;
  const bool slides =
      m.layer_types.empty() || m.layer_types[static_cast<std::size_t>(l)] == "sliding_attention";
  return slides ? m.sliding_window : 0;
}

}  // namespace peftrun
