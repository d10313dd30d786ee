#include "runtime/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace peftrun {

double learning_rate(const OptimConfig& o, int total_steps, int step) {
  if (step < o.warmup_steps) return o.lr * double(step) / double(std::max(1, o.warmup_steps));
  const double span = std::max(1, total_steps - o.warmup_steps);
  const double progress = std::clamp(double(step - o.warmup_steps) / span, 0.0, 1.0);
  double factor = 1.0;
  switch (o.schedule) {
    case LrSchedule::kConstant:
      factor = 1.0;
      break;
    case LrSchedule::kLinear:
      factor = 1.0 - progress;
      break;
    case LrSchedule::kCosine:
      factor = 0.5 * (1.0 + std::cos(M_PI * progress));
      break;
  }
  if (o.schedule != LrSchedule::kConstant) factor = std::max(factor, o.min_lr_ratio);
  return o.lr * factor;
}

}  // namespace peftrun
