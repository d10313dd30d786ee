// Building what both `peftrun train` and `peftrun eval` need from a Config: the frozen base
// (random or from an HF checkpoint), the adapter layout, and the initial trainable parameters
// (PEFT's init, or an existing PEFT adapter).
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "configs/config.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/peft_export.h"
#include "runtime/model/base_weights.h"

namespace peftrun {

// model.path empty: the deterministic random base from train.seed; else the HF checkpoint.
// Replicated: every caller holds the whole base.
BaseWeights load_base(const Config& config);

// The same base as rank `rank` of `world` keeps it: with `shard` and world > 1, sharded as
// BaseWeights::shard(rank, world) leaves it, an HF checkpoint reading only this rank's slices
// (load_hf_checkpoint_shard) so no rank ever holds the whole model; otherwise load_base(config).
BaseWeights load_base(const Config& config, int rank, int world, bool shard);

// The initial flat parameter buffer: `adapter_dir` (a PEFT adapter folder) when non-empty, else
// PEFT's initialisation from train.seed (DoRA's magnitude = row norms of W). An AdaLoRA rank
// pattern saved in the folder is returned in `rank_pattern` (empty otherwise).
//
// A sharded base needs `comm` (the ranks it is sharded over) for DoRA: each layer is
// all-gathered, one at a time, to take its row norms, so all ranks must call this together and
// get the same parameters as from the unsharded base. A replicated base makes no collective
// call, and `comm` may be null.
std::vector<float> initial_params(const Config& config, const BaseWeights& base,
                                  const AdapterLayout& layout, const std::string& adapter_dir,
                                  RankPattern* rank_pattern, Communicator* comm = nullptr);

// ||W_j|| for every output row j of the Linear `lin` of `layer` (the fp16 weights, in double).
// The base must not be sharded.
std::vector<double> base_row_norms(const BaseWeights& base, int layer, HfLinear lin);
// The same from a full layer buffer laid out by base.offsets() (e.g. an all-gathered one).
std::vector<double> base_row_norms(const BaseWeights& base, const half_bits* layer, HfLinear lin);

}  // namespace peftrun
