// Learning rate at optimizer step k (0-based), with HF transformers' definitions so curves
// compare one to one with a PyTorch run (get_{constant,linear,cosine}_schedule_with_warmup):
//   warmup (k < warmup_steps):  lr * k / warmup_steps   (so the first step uses lr 0, as in HF)
//   then progress = (k - warmup) / (steps - warmup) and
//     constant: lr;  linear: lr * (1 - progress);  cosine: lr * 0.5 * (1 + cos(pi * progress)),
//   never below lr * min_lr_ratio after warmup.
#pragma once

#include "configs/config.h"

namespace peftrun {

double learning_rate(const OptimConfig& optim, int total_steps, int step);

}  // namespace peftrun
