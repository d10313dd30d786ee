// fp16 dynamic loss scaling, torch.cuda.amp.GradScaler's rule. The loss (hence every gradient)
// is multiplied by scale() before backward, so small fp16 gradients do not flush to zero; after
// the gradient all-reduce the flat buffer is checked for Inf/NaN (cuda::nonfinite_scan, one
// report) and:
//   non-finite: skip the optimizer step, scale *= backoff (0.5), reset the good-step count
//   finite:     step with the gradients unscaled (AdamW's grad_scale *= 1 / scale, folded
//               with clipping: no extra pass), and after growth_interval consecutive finite
//               steps scale *= growth (2)
// The state (scale, good steps) lives on the host and is a few numbers: checkpoint it with the
// trainer state to resume exactly. With several ranks every rank sees the same reduced
// gradients, so all take the same decision.
#pragma once

#include <stdexcept>

namespace peftrun {

struct LossScaleConfig {
  double init_scale = 65536.0;  // 2^16, GradScaler's default
  double growth = 2.0;
  double backoff = 0.5;
  int growth_interval = 2000;
  double min_scale = 1.0;  // never scale below 1 (GradScaler has no floor; a floor keeps
                           // a run that overflows at every step from underflowing the scale)
};

class DynamicLossScale {
 public:
  explicit DynamicLossScale(const LossScaleConfig& c = {});

  double scale() const { return scale_; }
  double inverse() const { return 1.0 / scale_; }  // what AdamW's grad_scale is multiplied by
  int good_steps() const { return good_steps_; }

  // Feeds one step's verdict; returns true when the optimizer step should be applied.
  bool update(bool found_nonfinite);

  // Checkpoint round-trip.
  void restore(double scale, int good_steps);

 private:
  LossScaleConfig config_;
  double scale_;
  int good_steps_ = 0;
};

}  // namespace peftrun
