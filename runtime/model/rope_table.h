// The model's RoPE inverse frequencies, from its config: model.rope_theta and the
// model.rope_scaling variant (kernels/rope_frequencies.h computes them as transformers does).
#pragma once

#include <vector>

#include "configs/config.h"
#include "kernels/rope_frequencies.h"

namespace peftrun {

RopeParams rope_params(const ModelConfig& m);

// [head_dim / 2], the table rope_forward / rope_backward take.
std::vector<float> rope_table(const ModelConfig& m);

// Their cos_sin_scale (yarn's attention factor; 1 otherwise).
float rope_cos_sin_scale(const ModelConfig& m);

// Gemma 3's second table: plain RoPE of base model.rope_local_theta (no scaling, cos_sin_scale
// 1), which its sliding-window layers use; empty when rope_local_theta is 0.
std::vector<float> rope_local_table(const ModelConfig& m);

// Whether layer l rotates with the local table.
bool uses_local_rope(const ModelConfig& m, int l);

}  // namespace peftrun
