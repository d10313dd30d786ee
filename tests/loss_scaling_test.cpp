// The trainer's fp16 loss-scaling bookkeeping (runtime/train/loss_scaling.h).
#include "runtime/train/loss_scaling.h"

#include <gtest/gtest.h>

namespace peftrun {
namespace {

TEST(LossScaling, DisabledIsFactorOneAndNonFiniteDiverges) {
  LossScaling s(false);
  EXPECT_EQ(s.factor(), 1.0);
  EXPECT_EQ(s.judge(true), StepVerdict::kApply);
  EXPECT_EQ(s.judge(false), StepVerdict::kDiverged);
  EXPECT_EQ(s.checkpoint_value(), 1.0f);
  s.restore(1024.0f);  // ignored: nothing is scaled
  EXPECT_EQ(s.factor(), 1.0);
}

TEST(LossScaling, OverflowSkipsAndHalvesUntilTheFloorThenDiverges) {
  LossScaleConfig c;
  c.init_scale = 8;
  c.min_scale = 2;
  LossScaling s(true, c);
  EXPECT_EQ(s.factor(), 8.0);
  EXPECT_EQ(s.judge(false), StepVerdict::kSkip);
  EXPECT_EQ(s.factor(), 4.0);
  EXPECT_EQ(s.judge(false), StepVerdict::kSkip);
  EXPECT_EQ(s.factor(), 2.0);
  EXPECT_EQ(s.judge(false), StepVerdict::kDiverged);  // nothing left to lower
  EXPECT_EQ(s.factor(), 2.0);
  EXPECT_EQ(s.judge(true), StepVerdict::kApply);
}

TEST(LossScaling, GrowsAfterTheIntervalOfGoodSteps) {
  LossScaleConfig c;
  c.init_scale = 4;
  c.growth_interval = 3;
  LossScaling s(true, c);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(s.judge(true), StepVerdict::kApply);
  EXPECT_EQ(s.factor(), 4.0);
  EXPECT_EQ(s.judge(true), StepVerdict::kApply);
  EXPECT_EQ(s.factor(), 8.0);
  EXPECT_EQ(s.checkpoint_value(), 8.0f);
}

TEST(LossScaling, ResumeKeepsASavedScaleButNotTheOneOfAnUnscaledRun) {
  LossScaling s(true);
  s.restore(1.0f);  // written by a run without scaling: start at the initial scale
  EXPECT_EQ(s.factor(), LossScaleConfig{}.init_scale);
  s.restore(512.0f);
  EXPECT_EQ(s.factor(), 512.0);
}

TEST(LossScaling, ResumedGoodStepsGrowOnTheSameStepAsAnUninterruptedRun) {
  LossScaleConfig c;
  c.init_scale = 4;
  c.growth_interval = 3;
  LossScaling run(true, c);
  EXPECT_EQ(run.judge(true), StepVerdict::kApply);
  EXPECT_EQ(run.judge(true), StepVerdict::kApply);
  EXPECT_EQ(run.good_steps(), 2);
  LossScaling resumed(true, c);
  resumed.restore(run.checkpoint_value(), run.good_steps());
  EXPECT_EQ(resumed.judge(true), StepVerdict::kApply);
  EXPECT_EQ(resumed.factor(), 8.0);  // the third good step, as in `run`
  EXPECT_EQ(resumed.good_steps(), 0);
  EXPECT_EQ(LossScaling(false).good_steps(), 0);
}

}  // namespace
}  // namespace peftrun
