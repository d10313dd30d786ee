// The element-wise kernels on the GPU against the CPU twins: the cases of
// tests/gpu/elementwise_cases.h. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/elementwise_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

using namespace elementwise_cases;

void run(const AddCase& c) {
  GpuEnv env;
  for (const DType dt : kAllDTypes) {
    check_add_inplace(env, c, dt);
    check_scale(env, c, dt);
  }
}

TEST(GpuElementwiseParity, AddOne) {
  PEFTRUN_REQUIRE_GPU();
  run(kOne);
}
TEST(GpuElementwiseParity, AddTinyResidual) {
  PEFTRUN_REQUIRE_GPU();
  run(kTinyResidual);
}
TEST(GpuElementwiseParity, AddBeyondOneGridPass) {
  PEFTRUN_REQUIRE_GPU();
  run(kBeyondOneGridPass);
}
TEST(GpuElementwiseParity, ZeroMaskedRows) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_zero_masked_rows(env, 1, 1);
  check_zero_masked_rows(env, 28, 12);
  check_zero_masked_rows(env, 300, 64);
}

}  // namespace
}  // namespace peftrun::gpu_testing
