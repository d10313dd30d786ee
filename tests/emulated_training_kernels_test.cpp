// The CUDA kernels around the optimizer step and the adapters' inputs (kernels/adamw_blocks.h,
// nonfinite_blocks.h, convert_blocks.h, dropout_blocks.h) run in the CPU block emulator
// against their CPU twins: the cases of tests/gpu/optimizer_cases.h and
// tests/gpu/convert_dropout_cases.h. On a GPU machine tests/gpu/adamw_parity_test.cpp and
// convert_dropout_parity_test.cpp run the same cases on the device.
#include <gtest/gtest.h>

#include "tests/gpu/convert_dropout_cases.h"
#include "tests/gpu/optimizer_cases.h"
#include "tests/support/emulated_env.h"

namespace peftrun::gpu_testing {
namespace {

TEST(EmulatedAdamW, ThreeStepsAreBitIdenticalToTheCpu) {
  emu::EmuEnv env;
  for (const std::size_t n : kOptimizerLengths) check_adamw_three_steps(env, n);
}

TEST(EmulatedSumSquares, MatchesTheCpuDoubleSum) {
  emu::EmuEnv env;
  for (const std::size_t n : kOptimizerLengths) check_sum_squares(env, n);
  check_sum_squares(env, 1000003);  // more blocks than the first pass launches
}

TEST(EmulatedSumSquares, ReversedAndShuffledThreadOrders) {
  emu::EmuEnv reversed(emu::Schedule::kReversed), shuffled(emu::Schedule::kShuffled);
  check_sum_squares(reversed, 100003);
  check_sum_squares(shuffled, 100003);
}

TEST(EmulatedNonfinite, FindsEveryInfAndNaNLikeTheCpuScan) {
  emu::EmuEnv env;
  check_nonfinite_scan(env, 300);
  check_nonfinite_scan(env, 70001);
}

TEST(EmulatedNonfinite, ReversedAndShuffledThreadOrders) {
  emu::EmuEnv reversed(emu::Schedule::kReversed), shuffled(emu::Schedule::kShuffled);
  check_nonfinite_scan(reversed, 70001);
  check_nonfinite_scan(shuffled, 70001);
}

TEST(EmulatedConvert, EveryTypePairRoundsLikeTheHost) {
  emu::EmuEnv env;
  check_convert_every_pair(env, 10);
  check_convert_every_pair(env, 10007);
}

TEST(EmulatedConvert, CastRowsScaledIsOneFp32ProductThenRounding) {
  emu::EmuEnv env;
  check_cast_rows_scaled(env, 1, 1);
  check_cast_rows_scaled(env, 13, 127);
}

TEST(EmulatedDropout, KeepMaskIsBitIdenticalToTheCpu) {
  emu::EmuEnv env;
  check_keep_mask(env, 1);
  check_keep_mask(env, 1000003);
}

TEST(EmulatedDropout, ApplyAndMaskGiveTheFp32FormulaRounded) {
  emu::EmuEnv env;
  check_apply_and_mask(env, 1);
  check_apply_and_mask(env, 33 * 127);
}

}  // namespace
}  // namespace peftrun::gpu_testing
