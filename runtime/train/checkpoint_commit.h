// Writing OUTPUT/checkpoint-STEP/ so that it is complete or absent, never half (DESIGN §6).
//
// Commit protocol (collective: every rank calls commit_checkpoint after the same step):
//   0. The per-step stop-flag all-reduce already told every rank that every other rank finished
//      the step; trainable state is replicated, so rank 0 alone holds all of it.
//   1. Rank 0 writes .tmp-checkpoint-STEP/: the PEFT adapter, trainer_state.safetensors, and
//      trainer_state.json last (it lists every other file with its size); each file is fsynced
//      when written, then the folder itself.
//   2. The folder is renamed to checkpoint-STEP (atomically exchanged with an existing folder of
//      that name, whose old copy is then deleted) and OUTPUT is fsynced.
//   3. OUTPUT/latest is rewritten atomically (file fsynced, renamed, OUTPUT fsynced): only now
//      does the new checkpoint count. A failure here rolls step 2 back.
//   4. Older checkpoints beyond checkpoint.keep_last are pruned (never the one `latest` names).
//   5. Communicator::agree tells every rank whether the commit succeeded; a failure throws the
//      same AgreedError on every rank, saying that the previous checkpoint and `latest` are
//      intact. Nothing outside the temporary folder is touched before step 2, so any failure or
//      crash up to there leaves OUTPUT as it was.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "configs/config.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/peft_export.h"
#include "runtime/train/train_state_io.h"

namespace peftrun {

struct CheckpointContents {
  const Config* config = nullptr;
  const AdapterLayout* layout = nullptr;
  const RankPattern* rank_pattern = nullptr;  // AdaLoRA's current pattern; nullptr = none
  TrainStateView state;                       // params etc.; state.step names the folder
};

// Collective. Returns the committed folder on every rank; throws AgreedError (trainer.h) with the
// same message on every rank when rank 0 could not commit. Logs one line on rank 0.
std::string commit_checkpoint(const CheckpointContents& contents, Communicator& comm,
                              std::ostream& log);

// Removes what a killed or failed write leaves in `output_dir`: .tmp-checkpoint-*/ folders and
// `NAME.tmp-PID` files (write_file_atomic's). Returns the names removed. Only rank 0 calls it,
// before training starts.
std::vector<std::string> remove_stale_checkpoint_temps(const std::string& output_dir);

}  // namespace peftrun
