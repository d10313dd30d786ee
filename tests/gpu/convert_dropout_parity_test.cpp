// Storage conversions and dropout on the device against the host's bit-level definitions: the
// cases of tests/gpu/convert_dropout_cases.h, which tests/emulated_training_kernels_test.cpp also
// runs in the CPU block emulator.
#include <gtest/gtest.h>

#include "tests/gpu/convert_dropout_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

TEST(GpuConvertParity, EveryTypePairRoundsLikeTheHost) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_convert_every_pair(env, 10);
  check_convert_every_pair(env, 10007);
}

TEST(GpuConvertParity, CastRowsScaledIsOneFp32ProductThenRounding) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_cast_rows_scaled(env, 1, 1);
  check_cast_rows_scaled(env, 13, 127);
}

TEST(GpuDropoutParity, KeepMaskIsBitIdenticalToTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_keep_mask(env, 1);
  check_keep_mask(env, 1000003);
}

TEST(GpuDropoutParity, ApplyAndMaskGiveTheFp32FormulaRounded) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_apply_and_mask(env, 1);
  check_apply_and_mask(env, 33 * 127);
}

}  // namespace
}  // namespace peftrun::gpu_testing
