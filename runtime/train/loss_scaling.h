// The trainer's bookkeeping around fp16 dynamic loss scaling (kernels/loss_scale.h holds
// GradScaler's rule itself): what a step does with its all-reduced loss and gradient norm, and
// what a checkpoint carries. Pure host logic, tested without a GPU (tests/loss_scaling_test.cpp).
//
// Without scaling (the CPU, fp32/bf16 compute) every gradient carries the factor 1 and the
// checkpoint's loss_scale is 1; a non-finite loss or gradient ends the run (exit code 3), as it
// always did. With scaling (fp16 compute) the loss is multiplied by scale() before backward;
// a non-finite step is skipped and the scale halved, until the scale reaches its floor, where
// a non-finite step ends the run like an unscaled one.
#pragma once

#include "kernels/loss_scale.h"

namespace peftrun {

enum class StepVerdict {
  kApply,     // finite: unscale, clip, step
  kSkip,      // fp16 overflow: no update this step, the scale was lowered
  kDiverged,  // non-finite and nothing left to lower: NonFiniteError
};

class LossScaling {
 public:
  explicit LossScaling(bool enabled, const LossScaleConfig& config = {})
      : enabled_(enabled), scale_(config), min_scale_(config.min_scale) {}

  bool enabled() const { return enabled_; }
  // The factor the loss and hence every gradient carries this step (1 when disabled). A power
  // of two, so dividing by it is exact.
  double factor() const { return enabled_ ? scale_.scale() : 1.0; }

  // Feeds the step's verdict to the scale and says what the trainer does.
  StepVerdict judge(bool finite);

  // What trainer_state.safetensors records as loss_scale.
  float checkpoint_value() const { return static_cast<float>(factor()); }
  // Finite steps since the scale last changed (checkpointed, so growth resumes on time).
  int good_steps() const { return enabled_ ? scale_.good_steps() : 0; }
  // Resume: a saved value other than 1 continues, with its count of good steps (1 is what
  // every unscaled run writes, so an fp16 run resumed from one starts at the initial scale).
  void restore(float saved, int good_steps = 0);

 private:
  bool enabled_;
  DynamicLossScale scale_;
  double min_scale_;
};

}  // namespace peftrun
