#include "runtime/model/rope_table.h"

#include "runtime/model/model_constants.h"

namespace peftrun {

RopeParams rope_params(const ModelConfig& m, bool long_context) {
  RopeParams p;
  p.theta = m.rope_theta;
  switch (m.rope_scaling) {
    case RopeScaling::kNone:
      p.type = RopeType::kDefault;
      break;
    case RopeScaling::kLinear:
      p.type = RopeType::kLinear;
      break;
    case RopeScaling::kDynamic:
      p.type = RopeType::kDynamic;
      break;
    case RopeScaling::kLlama3:
      p.type = RopeType::kLlama3;
      break;
    case RopeScaling::kYarn:
      p.type = RopeType::kYarn;
      break;
    case RopeScaling::kLongrope:
      p.type = RopeType::kLongrope;
      p.ext_factors = long_context ? m.rope_long_factor : m.rope_short_factor;
      break;
  }
  p.factor = m.rope_factor;
  p.low_freq_factor = m.rope_low_freq_factor;
  p.high_freq_factor = m.rope_high_freq_factor;
  // 0 = the pretraining context is max_position_embeddings (what transformers assumes).
  p.original_max_positions =
      m.rope_original_max_seq_len > 0 ? m.rope_original_max_seq_len : m.max_seq_len;
  p.max_positions = m.max_seq_len;
  p.beta_fast = m.rope_beta_fast;
  p.beta_slow = m.rope_beta_slow;
  p.attention_factor = m.rope_attention_factor;
  p.truncate = m.rope_truncate;
  return p;
}

std::vector<float> rope_table(const ModelConfig& m, bool long_context) {
  return rope_inverse_frequencies(m.rotary_dim(), rope_params(m, long_context));
}

float rope_cos_sin_scale(const ModelConfig& m) {
  return rope_attention_scaling(rope_params(m));
}

LayerRope::LayerRope(const ModelConfig& m)
    : global_(rope_table(m)), global_scale_(rope_cos_sin_scale(m)) {
  if (m.rope_scaling == RopeScaling::kLongrope) {
    global_long_ = rope_table(m, /*long_context=*/true);
    long_after_ = rope_params(m).original_max_positions;
  }
  for (int l = 0; l < m.n_layers; ++l) {
    local_layers_.push_back(m.rope_local_theta > 0 && attention_window(m, l) > 0);
    rotating_layers_.push_back(m.no_rope_layers.empty() ||
                               m.no_rope_layers[static_cast<std::size_t>(l)] != 0);
  }
  if (m.rope_local_theta > 0) {
    RopeParams p;
    p.type = RopeType::kDefault;
    p.theta = m.rope_local_theta;
    p.original_max_positions = m.max_seq_len;
    p.max_positions = m.max_seq_len;
    local_ = rope_inverse_frequencies(m.rotary_dim(), p);
  }
}

bool LayerRope::rotates(int l) const {
  return rotating_layers_[static_cast<std::size_t>(l)];
}

const float* LayerRope::inv_freq(int l, bool long_context) const {
  if (local(l)) return local_.data();
  return long_context && !global_long_.empty() ? global_long_.data() : global_.data();
}

float LayerRope::cos_sin_scale(int l) const {
  return local(l) ? 1.0f : global_scale_;
}

}  // namespace peftrun
