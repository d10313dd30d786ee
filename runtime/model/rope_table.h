// The model's RoPE inverse frequencies, from its config: model.rope_theta and the
// model.rope_scaling variant (kernels/rope_frequencies.h computes them as transformers does).
#pragma once

#include <cstddef>
#include <vector>

#include "configs/config.h"
#include "kernels/rope_frequencies.h"

namespace peftrun {

// `long_context`: longrope's long factors instead of the short ones (no other variant has two).
RopeParams rope_params(const ModelConfig& m, bool long_context = false);

// [rotary_dim / 2], the table rope_forward / rope_backward take.
std::vector<float> rope_table(const ModelConfig& m, bool long_context = false);

// Their cos_sin_scale (yarn's attention factor; 1 otherwise).
float rope_cos_sin_scale(const ModelConfig& m);

// What each layer rotates with, for the CPU and the device model alike: the table above and its
// cos_sin_scale, or, in Gemma 3's sliding-window layers (model.rope_local_theta set), plain RoPE
// of base rope_local_theta with scale 1; or nothing, in SmolLM3's NoPE layers
// (model.no_rope_layers 0). longrope has two tables, and, as transformers' Phi-3 does per
// forward, a micro-batch rotates with the long one when its largest position is beyond the
// original context (long_context), with the short one otherwise.
class LayerRope {
 public:
  LayerRope() = default;
  explicit LayerRope(const ModelConfig& m);

  // Whether a micro-batch whose largest position is `max_position` takes the long table.
  bool long_context(int max_position) const {
    return !global_long_.empty() && max_position + 1 > long_after_;
  }
  bool rotates(int l) const;  // false: the layer's q and k pass without RoPE
  // [head_dim / 2]; `long_context` as long_context() said for the micro-batch.
  // [rotary_dim / 2]
  const float* inv_freq(int l, bool long_context = false) const;
  float cos_sin_scale(int l) const;

 private:
  bool local(int l) const { return local_layers_[static_cast<std::size_t>(l)]; }

  std::vector<float> global_, global_long_, local_;
  int long_after_ = 0;  // longrope's original context
  float global_scale_ = 1.0f;
  std::vector<bool> local_layers_, rotating_layers_;
};

}  // namespace peftrun
