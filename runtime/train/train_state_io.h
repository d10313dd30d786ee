// The trainer state that a checkpoint must hold to continue a run exactly (DESIGN §6): the flat
// params and AdamW moments, the AdaLoRA allocator state and the step. The data order and every
// random stream are pure functions of (seed, step, sample index), so the step is the whole
// cursor: no RNG state needs saving.
//
//   trainer_state.safetensors   params, adam_m, adam_v [layout.total()];
//                               adalora_ipt_ema, adalora_unc_ema, adalora_mask (AdaLoRA only)
//   trainer_state.json          step, world_size, adapter type, AdaLoRA flags, peftrun version
#pragma once

#include <map>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/adapters/adalora_allocator.h"
#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

struct TrainStateView {
  int step = 0;
  int world_size = 1;
  std::vector<float>* params = nullptr;
  std::vector<float>* adam_m = nullptr;
  std::vector<float>* adam_v = nullptr;
  AdaLoraState* adalora = nullptr;  // nullptr unless the adapter is AdaLoRA
};

// Writes both files into `dir` (each atomically). Throws std::runtime_error naming the file.
void write_train_state(const std::string& dir, const Config& config, const TrainStateView& state);

// Reads them back into `state` (its vectors already sized for `layout`). Refuses, naming the
// file and the tensor or field: a missing file, a different adapter type, a tensor of the wrong
// size or dtype. Sets state.step and state.world_size from the file.
void read_train_state(const std::string& dir, const Config& config, const AdapterLayout& layout,
                      TrainStateView& state);

// Every config key as printed by config_to_yaml, e.g. {"adapter.r": "8", ...}; stored in
// trainer_state.json so a resume can name exactly which keys differ.
std::map<std::string, std::string> config_fingerprint(const Config& config);

// Keys a resume may change with --resume-force: total steps, the learning-rate schedule and the
// checkpoint cadence (they change the rest of the run, not the state already computed). Keys
// about where and how the run executes (output_dir, threads, device, comm, logging, evaluation)
// may always differ; every other key must match.
bool resume_safe_key(const std::string& key);

// Compares the checkpoint's stored config with `config`. Returns the differing keys that were
// accepted (only with `force`, all of them safe); throws naming the file and every differing
// key otherwise.
std::vector<std::string> check_resume_config(const std::string& dir, const Config& config,
                                             bool force);

// `latest` resolves through OUTPUT/latest (the name of the newest complete checkpoint); any other
// value is a checkpoint folder. Throws naming what is missing.
std::string resolve_resume_dir(const std::string& resume, const std::string& output_dir);

// Points OUTPUT/latest at `checkpoint_name` atomically (written last, after the checkpoint).
void write_latest_pointer(const std::string& output_dir, const std::string& checkpoint_name);

}  // namespace peftrun
