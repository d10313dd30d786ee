// What a run of a config will hold in memory, from the shapes alone (no weight is read): the
// lines `peftrun check` prints under the resolved config, as YAML comments so that its output
// still loads back.
#pragma once

#include <string>

#include "configs/config.h"

namespace peftrun {

// "# ..." lines, each ending in '\n': the fp16 base, the CPU model's buffers with and without
// gradient checkpointing (Transformer::planned_bytes), the trainable state, in CUDA builds the
// device arenas of both plans, and the host memory available here.
std::string memory_plan_comment(const Config& config);

}  // namespace peftrun
