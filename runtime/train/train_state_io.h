// The trainer state that a checkpoint must hold to continue a run exactly (DESIGN §6): the flat
// params and AdamW moments, the AdaLoRA allocator state, the loss scale and the step. The data
// order and every random stream are pure functions of (seed, step, sample index), so the step
// is the whole data cursor and RNG state; trainer_state.json says so explicitly.
//
//   trainer_state.safetensors   params, adam_m, adam_v [layout.total()]; loss_scale [] (1: the
//                               CPU backend does not scale the loss); adalora_ipt_ema,
//                               adalora_unc_ema [layout.total()], adalora_mask [modules*init_r]
//   trainer_state.json          step, optimizer_steps, loss_scale_good_steps, world_size,
//                               batch (how the global batch was split), data_cursor, rng,
//                               adapter type, AdaLoRA flags, peftrun version, config (every
//                               resolved key), config_digest, files (the name and byte size of
//                               every other file of the folder; written last)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/adapters/adalora_allocator.h"
#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

// How a step's global batch of sequences was split: world_size x grad_accum x micro_batch_size.
struct BatchSplit {
  int world_size = 1;
  int grad_accum = 1;
  int micro_batch_size = 1;
  std::int64_t global_batch() const {
    return std::int64_t(world_size) * grad_accum * micro_batch_size;
  }
};

struct TrainStateView {
  int step = 0;
  BatchSplit batch;
  std::vector<float>* params = nullptr;
  std::vector<float>* adam_m = nullptr;
  std::vector<float>* adam_v = nullptr;
  AdaLoraState* adalora = nullptr;  // nullptr unless the adapter is AdaLoRA
  float loss_scale = 1.0f;
  int loss_scale_good_steps = 0;  // finite steps since the scale last changed
  int optimizer_steps = 0;        // AdamW updates applied (<= step)
};

// What trainer_state.json says, every field checked for presence and type on reading.
struct CheckpointHeader {
  std::string dir;        // the checkpoint folder
  std::string json_path;  // dir/trainer_state.json, for messages
  int step = 0;
  int optimizer_steps = 0;        // optional on reading: `step` when absent (older checkpoints)
  int loss_scale_good_steps = 0;  // optional on reading: 0 when absent
  BatchSplit batch;               // the split the run that wrote it used
  std::string adapter_type;
  std::string peftrun_version;
  std::uint64_t trainable_elements = 0;
  std::map<std::string, std::string> config;  // config_fingerprint of that run's config
  std::string config_digest;
  std::map<std::string, std::uint64_t> files;  // every other file of the folder -> byte size
  bool adalora_has_pattern = false, adalora_fixed = false;
};

// Writes trainer_state.safetensors, then trainer_state.json listing every file already in `dir`
// (the PEFT adapter, the safetensors) with its size, so it must come last. Each file atomically;
// throws std::runtime_error naming the file.
void write_train_state(const std::string& dir, const Config& config, const TrainStateView& state);

// Parses dir/trainer_state.json. Throws naming the file and the field: a missing or malformed
// file, a missing field or one of the wrong type, a config_digest that does not match the
// file's own config record.
CheckpointHeader read_checkpoint_header(const std::string& dir);

// Every file the header lists exists with exactly its recorded size (a truncated or missing
// file is refused naming it). Cheap: only stats.
void verify_checkpoint_files(const CheckpointHeader& header);

// Reads the tensors into `state` (its vectors are resized for `layout`). Refuses, naming the
// file and the tensor: a missing tensor, a wrong dtype or shape, a truncated file, an adapter
// of another type. Sets state.step and state.batch from the header.
void read_train_state(const CheckpointHeader& header, const Config& config,
                      const AdapterLayout& layout, TrainStateView& state);

// `latest` resolves through OUTPUT/latest (the name of the newest complete checkpoint); any other
// value is a checkpoint folder. Throws naming what is missing (a `latest` naming a folder that
// does not exist included).
std::string resolve_resume_dir(const std::string& resume, const std::string& output_dir);

// The checkpoint folder OUTPUT/latest names, or "" when there is none.
std::string read_latest_pointer(const std::string& output_dir);

// Points OUTPUT/latest at `checkpoint_name` atomically (written last, after the checkpoint).
void write_latest_pointer(const std::string& output_dir, const std::string& checkpoint_name);

}  // namespace peftrun
