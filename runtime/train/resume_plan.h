// Deciding whether (and how) a checkpoint may be resumed under the current config and world size.
//
// Keys fall in four groups:
//   operational   where and how the run executes (output_dir, threads, device, comm, logging,
//                 evaluation): free to differ
//   split         train.grad_accum, train.micro_batch_size: only the global batch
//                 (ranks x grad_accum x micro_batch_size sequences per step) changes the math,
//                 so these may change as long as it stays the same (see plan_resume)
//   resume-safe   train.steps, the lr schedule, the checkpoint cadence: change the rest of the
//                 run, not the state already computed; accepted with --resume-force
//   math          everything else (model, adapter, data order, seed, optimizer): must match
// config_digest hashes the math keys plus the global batch, so equal digests mean the same math.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/train/train_state_io.h"

namespace peftrun {

// Every config key as printed by config_to_yaml, e.g. {"adapter.r": "8", ...}; stored in
// trainer_state.json so a resume can name exactly which keys differ. AdaLoRA's schedule length
// is recorded as the value in effect (train.steps when adapter.total_step is 0).
std::map<std::string, std::string> config_fingerprint(const Config& config);

bool resume_safe_key(const std::string& key);

// "fnv1a64:<16 hex digits>" of the math keys of `fingerprint` and the global batch: stable
// across runs, platforms and key order.
std::string config_digest(const std::map<std::string, std::string>& fingerprint,
                          std::int64_t global_batch);

struct ResumePlan {
  // Micro-batches per rank and step for this run: the config's, or the one that keeps the
  // checkpoint's global batch on this world size.
  int grad_accum = 1;
  bool bitwise = true;             // same split as the checkpoint: the continuation is bit-exact
  std::vector<std::string> notes;  // what was adjusted or accepted, one log line each
};

// Compares the checkpoint with `config` on `world_size` ranks. The global batch is kept: with
// the same split nothing changes; on another world size (or with another micro_batch_size)
// grad_accum becomes global / (world x micro_batch_size), refused when that does not divide, and
// a grad_accum the user set explicitly (it differs from the checkpoint's config) must give the
// same global batch. Math keys that differ are refused, naming each key and both values; safe
// keys that differ need `force`. Throws std::runtime_error naming the file.
ResumePlan plan_resume(const CheckpointHeader& checkpoint, const Config& config, int world_size,
                       bool force);

}  // namespace peftrun
