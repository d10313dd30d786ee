// Held-out evaluation: mean token loss over (at most) N micro-batches of an eval split, used by
// the trainer's periodic evaluation and by `peftrun eval`.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "configs/config.h"
#include "runtime/data/data_source.h"
#include "runtime/train/eval_model.h"

namespace peftrun {

struct EvalResult {
  double mean_loss = 0;  // NaN when there were no target tokens
  double tokens = 0;
  // Filled when requested: the first batch's inputs/targets [B*T] and logits [B*T, vocab].
  std::vector<std::int32_t> first_inputs, first_targets;
  // Packed data only (empty for token files): the first batch's positions and segment ids.
  std::vector<std::int32_t> first_positions, first_segments;
  std::vector<float> first_logits;
};

// The model's own parameters are evaluated (a backend's, on its device).
EvalResult evaluate(EvalModel& model, const DataSource& data, int batch, int seq_len,
                    int max_batches, Communicator& comm, bool keep_first_logits = false);

struct EvalOptions {
  std::string adapter_dir;  // PEFT adapter to evaluate; empty = adapter.init_from or PEFT init
  std::string dump_logits;  // write the first batch's logits here (safetensors); empty = no
  int local_ranks = 1;      // ranks on this machine (they share its memory); see BackendSetup
};

// `peftrun eval`: loss and perplexity of the config's model + adapter on data.eval (in
// data.eval_format), on the backend runtime.device chooses. Throws std::runtime_error naming
// the file on failure.
EvalResult run_eval_command(const Config& config, const EvalOptions& options, std::ostream& log,
                            Communicator& comm);

}  // namespace peftrun
