// Building what both `peftrun train` and `peftrun eval` need from a Config: the frozen base
// (random or from an HF checkpoint), the adapter layout, and the initial trainable parameters
// (PEFT's init, or an existing PEFT adapter).
#pragma once

#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/peft_export.h"
#include "runtime/model/base_weights.h"

namespace peftrun {

// model.path empty: the deterministic random base from train.seed; else the HF checkpoint.
BaseWeights load_base(const Config& config);

// The initial flat parameter buffer: `adapter_dir` (a PEFT adapter folder) when non-empty, else
// PEFT's initialisation from train.seed (DoRA's magnitude = row norms of W). An AdaLoRA rank
// pattern saved in the folder is returned in `rank_pattern` (empty otherwise).
std::vector<float> initial_params(const Config& config, const BaseWeights& base,
                                  const AdapterLayout& layout, const std::string& adapter_dir,
                                  RankPattern* rank_pattern);

// ||W_j|| for every output row j of projection `p` of `layer` (the fp16 weights, in double).
std::vector<double> base_row_norms(const BaseWeights& base, int layer, Proj p);

}  // namespace peftrun
