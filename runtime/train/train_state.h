// Everything that changes from step to step: what a checkpoint must hold to resume exactly.
// The host copy; a device backend (training_backend.h) keeps its own and mirrors it here only
// when a checkpoint, an export or a log line needs it.
#pragma once

#include <optional>
#include <vector>

#include "runtime/adapters/adalora_allocator.h"
#include "runtime/adapters/peft_export.h"

namespace peftrun {

struct TrainState {
  std::vector<float> params, grads, adam_m, adam_v;  // one flat layout (AdapterLayout)
  std::optional<AdaLoraAllocator> allocator;         // AdaLoRA only
  int step = 0;             // steps taken (the data cursor, the LR schedule, AdaLoRA's budget)
  int optimizer_steps = 0;  // AdamW updates applied: fewer than `step` when fp16 loss scaling
                            // skipped some (GradScaler skips optimizer.step(), so torch's
                            // AdamW bias correction counts only the applied ones)

  RankPattern rank_pattern() const {
    if (!allocator || !allocator->state().has_pattern) return {};
    return allocator->rank_pattern();
  }
};

}  // namespace peftrun
