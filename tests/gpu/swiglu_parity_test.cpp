// SwiGLU on the GPU against the CPU twin: the cases of tests/gpu/swiglu_cases.h in fp32, fp16
// and bf16. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_env.h"
#include "tests/gpu/swiglu_cases.h"

namespace peftrun::gpu_testing {
namespace {

using namespace swiglu_cases;

void run(const SwigluCase& c) {
  GpuEnv env;
  for (const DType dt : kAllDTypes) check_swiglu(env, c, dt);
}

TEST(GpuSwigluParity, OneElement) {
  PEFTRUN_REQUIRE_GPU();
  run(kOne);
}
TEST(GpuSwigluParity, Seven) {
  PEFTRUN_REQUIRE_GPU();
  run(kSeven);
}
TEST(GpuSwigluParity, TinyConfig33x384) {
  PEFTRUN_REQUIRE_GPU();
  run(kTinyConfigRows);
}
TEST(GpuSwigluParity, BeyondOneGridPass) {
  PEFTRUN_REQUIRE_GPU();
  run(kBeyondOneGridPass);
}

}  // namespace
}  // namespace peftrun::gpu_testing
