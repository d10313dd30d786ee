// The model's RoPE inverse frequencies, from its config: model.rope_theta and the
// model.rope_scaling variant (kernels/rope_frequencies.h computes them as transformers does).
#pragma once

#include <cstddef>
#include <vector>

#include "configs/config.h"
#include "kernels/rope_frequencies.h"

namespace peftrun {

RopeParams rope_params(const ModelConfig& m);

// [head_dim / 2], the table rope_forward / rope_backward take.
std::vector<float> rope_table(const ModelConfig& m);

// Their cos_sin_scale (yarn's attention factor; 1 otherwise).
float rope_cos_sin_scale(const ModelConfig& m);

// What each layer rotates with, for the CPU and the device model alike: the table above and its
// cos_sin_scale, or, in Gemma 3's sliding-window layers (model.rope_local_theta set), plain RoPE
// of base rope_local_theta with scale 1; or nothing, in SmolLM3's NoPE layers
// (model.no_rope_layers 0).
class LayerRope {
 public:
  LayerRope() = default;
  explicit LayerRope(const ModelConfig& m);

  bool rotates(int l) const;           // false: the layer's q and k pass without RoPE
  const float* inv_freq(int l) const;  // [head_dim / 2]
  float cos_sin_scale(int l) const;

 private:
  bool local(int l) const { return local_layers_[static_cast<std::size_t>(l)]; }

  std::vector<float> global_, local_;
  float global_scale_ = 1.0f;
  std::vector<bool> local_layers_, rotating_layers_;
};

}  // namespace peftrun
