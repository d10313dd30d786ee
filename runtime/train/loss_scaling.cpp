#include "runtime/train/loss_scaling.h"

namespace peftrun {

StepVerdict LossScaling::judge(bool finite) {
  if (!enabled_) return finite ? StepVerdict::kApply : StepVerdict::kDiverged;
  if (!finite && scale_.scale() <= min_scale_) return StepVerdict::kDiverged;
  return scale_.update(!finite) ? StepVerdict::kApply : StepVerdict::kSkip;
}

void LossScaling::restore(float saved, int good_steps) {
  if (enabled_ && saved != 1.0f) scale_.restore(saved, good_steps);
}

}  // namespace peftrun
