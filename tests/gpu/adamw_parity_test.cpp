// The optimizer-side kernels against the CPU on the device: the cases of
// tests/gpu/optimizer_cases.h (AdamW bit for bit, the gradient-norm sum of squares, the
// non-finite detector in every storage type), which tests/emulated_training_kernels_test.cpp
// also runs in the CPU block emulator.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_env.h"
#include "tests/gpu/optimizer_cases.h"

namespace peftrun::gpu_testing {
namespace {

TEST(GpuAdamWParity, ThreeStepsAreBitIdenticalToTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const std::size_t n : kOptimizerLengths) check_adamw_three_steps(env, n);
}

TEST(GpuSumSquaresParity, MatchesTheCpuDoubleSum) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const std::size_t n : kOptimizerLengths) check_sum_squares(env, n);
  check_sum_squares(env, 1000003);
}

TEST(GpuNonfiniteParity, FindsEveryInfAndNaNLikeTheCpuScan) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_nonfinite_scan(env, 300);
  check_nonfinite_scan(env, 70001);
}

}  // namespace
}  // namespace peftrun::gpu_testing
